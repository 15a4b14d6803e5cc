// Files written so that a crash never leaves a half-written one behind, and the small
// helpers their error messages share.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace cutlayer::io {

// Writes `n` bytes to `path`, atomically and durably: a temp file "<path>.tmp" is created
// with O_CREAT|O_EXCL|O_NOFOLLOW (so it is always a fresh file, never an existing file or
// the target of a symbolic link planted there) with `mode` (less the umask), written,
// fsynced and renamed over `path`; then the directory is fsynced, so the rename itself
// survives a power cut. A stale temp file of this user's from an interrupted run is removed
// first; anything else at the temp path (a symbolic link, another user's file) is refused.
// Refuses to replace an existing `path` unless `replace`. Throws IoError naming the path.
void write_file_atomically(const std::string& path, const void* data, std::size_t n, mode_t mode,
                           bool replace);

// fsync of a directory: makes the names created, renamed or removed in it durable. Best
// effort (a directory that cannot be opened is left as it is).
void fsync_dir(const std::string& dir);

// The directory part of `path` ("." for a bare name).
std::string parent_dir(const std::string& path);

// `s` quoted as one shell word when it needs quoting, for the fix commands in messages.
std::string shell_word(const std::string& s);

}  // namespace cutlayer::io
