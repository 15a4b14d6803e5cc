#include "cutlayer/io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cutlayer/error.h"

namespace cutlayer::io {
namespace {

// Creates `tmp` as a new file (never an existing one, never through a symbolic link).
int create_temp(const std::string& tmp, mode_t mode) {
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = ::open(tmp.c_str(), flags, mode);
  if (fd < 0 && errno == EEXIST) {
    struct stat st {};
    if (::lstat(tmp.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        throw IoError("'" + tmp + "' is a symbolic link; refusing to write through it. " +
                      "If it is yours, remove it (rm " + shell_word(tmp) + ") and run again");
      if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
        throw IoError("'" + tmp + "' exists and is not a temp file of this user's; refusing to " +
                      "use it. Remove it (rm " + shell_word(tmp) + ") and run again");
      // A temp file left by an interrupted run. unlink() removes the name itself (were it
      // swapped for a link meanwhile, the link, never its target); O_EXCL then creates anew.
      if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
        throw IoError("cannot remove the stale temp file '" + tmp + "': " + std::strerror(errno));
    }
    fd = ::open(tmp.c_str(), flags, mode);
  }
  if (fd < 0)
    throw IoError("cannot create '" + tmp + "': " + std::strerror(errno) +
                  (errno == EEXIST ? " (it was created again meanwhile: is another process "
                                     "writing the same file?)"
                                   : ""));
  return fd;
}

}  // namespace

std::string shell_word(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789/._-+,:@%=") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the rename is done either way
  (void)::fsync(fd);
  ::close(fd);
}

void write_file_atomically(const std::string& path, const void* data, std::size_t n, mode_t mode,
                           bool replace) {
  struct stat st {};
  if (!replace && ::lstat(path.c_str(), &st) == 0)
    throw IoError("'" + path + "' exists; refusing to overwrite it (pass --force to replace it)");
  const std::string tmp = path + ".tmp";
  const int fd = create_temp(tmp, mode);
  auto fail = [&](const std::string& what) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw IoError(what + " '" + tmp + "': " + err);
  };
  const auto* p = static_cast<const char*>(data);
  std::size_t left = n;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) fail("cannot flush");
  if (::close(fd) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IoError("cannot flush '" + tmp + "': " + err);
  }
  // rename() replaces `path` itself, were it a symbolic link (never its target).
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IoError("cannot rename '" + tmp + "' to '" + path + "': " + err);
  }
  fsync_dir(parent_dir(path));
}

}  // namespace cutlayer::io
