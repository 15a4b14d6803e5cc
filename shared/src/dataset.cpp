#include "cutlayer/data/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "cutlayer/error.h"

namespace cutlayer::data {
namespace {

constexpr std::size_t kMaxFileBytes = std::size_t{4} << 30;

// Reads a whole file, gunzipping it when it is gzip (zlib reads plain files as they are).
std::vector<std::uint8_t> read_maybe_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr)
    throw IoError("cannot open '" + path + "': " + std::strerror(errno) +
                  (path.find("fashion-mnist") != std::string::npos
                       ? " (install Debian's dataset-fashion-mnist: scripts/install-deps.sh)"
                       : ""));
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  int got;
  while ((got = gzread(f, buf, sizeof buf)) > 0) {
    out.insert(out.end(), buf, buf + got);
    if (out.size() > kMaxFileBytes) {
      gzclose(f);
      throw IoError("'" + path + "' is larger than 4 GiB uncompressed; refusing to load it");
    }
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  gzclose(f);
  if (got < 0 || (err != Z_OK && err != Z_STREAM_END))
    throw IoError("'" + path + "' is damaged: " + (msg ? msg : "read error"));
  return out;
}

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Parses an IDX header: returns dims; checks magic and the payload size.
std::vector<std::int64_t> idx_dims(const std::vector<std::uint8_t>& bytes, int want_rank,
                                   const std::string& path) {
  if (bytes.size() < 4) throw ConfigError("'" + path + "' is too short to be an IDX file");
  if (bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08)
    throw ConfigError("'" + path + "' is not an unsigned-byte IDX file (bad magic)");
  const int rank = bytes[3];
  if (rank != want_rank)
    throw ConfigError("'" + path + "' has " + std::to_string(rank) + " dimensions, expected " +
                      std::to_string(want_rank));
  if (bytes.size() < 4 + 4 * static_cast<std::size_t>(rank))
    throw ConfigError("'" + path + "' is truncated in its header");
  std::vector<std::int64_t> dims;
  std::size_t total = 1;
  for (int i = 0; i < rank; ++i) {
    const auto d = be32(bytes.data() + 4 + 4 * i);
    if (d == 0 || d > (1u << 28)) throw ConfigError("'" + path + "' declares an absurd dimension");
    dims.push_back(d);
    total *= d;
    if (total > kMaxFileBytes) throw ConfigError("'" + path + "' declares more than 4 GiB");
  }
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  if (bytes.size() != header + total)
    throw ConfigError("'" + path + "' holds " + std::to_string(bytes.size() - header) +
                      " data bytes, its header declares " + std::to_string(total));
  return dims;
}

}  // namespace

Dataset Dataset::subset(const std::vector<std::int64_t>& indices) const {
  auto idx = torch::tensor(indices, torch::kInt64);
  return {x.index_select(0, idx), y.index_select(0, idx), source};
}

Dataset load_idx_bytes(const std::string& images, const std::string& labels) {
  const auto ib = read_maybe_gz(images);
  const auto lb = read_maybe_gz(labels);
  const auto idims = idx_dims(ib, 3, images);
  const auto ldims = idx_dims(lb, 1, labels);
  if (idims[0] != ldims[0])
    throw ConfigError("'" + images + "' has " + std::to_string(idims[0]) + " images but '" + labels +
                      "' has " + std::to_string(ldims[0]) + " labels");
  const std::int64_t n = idims[0], h = idims[1], w = idims[2];
  Dataset d;
  d.x = torch::from_blob(const_cast<std::uint8_t*>(ib.data() + 16), {n, 1, h, w}, torch::kUInt8).clone();
  d.y = torch::from_blob(const_cast<std::uint8_t*>(lb.data() + 8), {n}, torch::kUInt8).to(torch::kInt64);
  d.source = images;
  return d;
}

void normalize(Dataset& d, const Normalization& norm) {
  // In place: one float copy of the images at a time (an out-of-place expression holds
  // every intermediate until its end: ~0.75 GB for Fashion-MNIST's training set).
  d.x = d.x.to(torch::kFloat32);
  d.x.mul_(norm.scale).sub_(norm.mean).div_(norm.std);
}

Dataset load_idx(const std::string& images, const std::string& labels, const Normalization& norm) {
  Dataset d = load_idx_bytes(images, labels);
  normalize(d, norm);
  return d;
}

Dataset load_fashion_mnist_bytes(const std::string& dir, bool train) {
  const std::string prefix = dir + (train ? "/train" : "/t10k");
  return load_idx_bytes(prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz");
}

Dataset load_fashion_mnist(const std::string& dir, bool train, const Normalization& norm) {
  Dataset d = load_fashion_mnist_bytes(dir, train);
  normalize(d, norm);
  return d;
}

namespace {

// A CSV: one header line, numeric columns. `label_column` is the class; when it is not
// required and not in the header, every column is a feature and y stays undefined.
Dataset parse_csv(const std::string& path, const std::string& label_column, bool label_required,
                  const Normalization& norm) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
  std::string line;
  if (!std::getline(in, line)) throw ConfigError("'" + path + "' is empty (a header line is needed)");
  if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF line ends (Python's csv, spreadsheets)
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) header.push_back(cell);
  }
  const auto it = std::find(header.begin(), header.end(), label_column);
  if (it == header.end() && label_required)
    throw ConfigError("'" + path + "': no column named '" + label_column + "' in the header");
  const bool labelled = it != header.end();
  const auto label_at = labelled ? static_cast<std::size_t>(it - header.begin()) : header.size();
  std::vector<float> xs;
  std::vector<std::int64_t> ys;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::stringstream ss(line);
    std::string cell;
    std::size_t col = 0;
    while (std::getline(ss, cell, ',')) {
      char* end = nullptr;
      const double v = std::strtod(cell.c_str(), &end);
      if (end == cell.c_str())
        throw ConfigError(path + ":" + std::to_string(lineno) + ": column " + std::to_string(col + 1) +
                          " is not a number ('" + cell + "')");
      if (col == label_at) {
        if (v < 0 || v != static_cast<double>(static_cast<std::int64_t>(v)))
          throw ConfigError(path + ":" + std::to_string(lineno) + ": label must be a class number >= 0");
        ys.push_back(static_cast<std::int64_t>(v));
      } else {
        xs.push_back(static_cast<float>(v));
      }
      ++col;
    }
    if (col != header.size())
      throw ConfigError(path + ":" + std::to_string(lineno) + ": " + std::to_string(col) +
                        " columns, the header has " + std::to_string(header.size()));
  }
  const auto f = static_cast<std::int64_t>(header.size()) - (labelled ? 1 : 0);
  if (f < 1) throw ConfigError("'" + path + "' has no feature column");
  const auto n = static_cast<std::int64_t>(xs.size()) / f;
  Dataset d;
  d.x = torch::tensor(xs).reshape({n, f});
  d.x.mul_(norm.scale).sub_(norm.mean).div_(norm.std);  // in place, as load_idx
  if (labelled) d.y = torch::tensor(ys, torch::kInt64);
  d.source = path;
  return d;
}

}  // namespace

Dataset load_csv(const std::string& path, const std::string& label_column, const Normalization& norm) {
  return parse_csv(path, label_column, /*label_required=*/true, norm);
}

Dataset load_inputs(const std::string& path, const std::string& label_column, const Normalization& norm) {
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".csv") == 0)
    return parse_csv(path, label_column, /*label_required=*/false, norm);
  const auto bytes = read_maybe_gz(path);
  const auto dims = idx_dims(bytes, 3, path);
  Dataset d;
  d.x = torch::from_blob(const_cast<std::uint8_t*>(bytes.data() + 16), {dims[0], 1, dims[1], dims[2]}, torch::kUInt8)
            .to(torch::kFloat32);
  d.x.mul_(norm.scale).sub_(norm.mean).div_(norm.std);
  d.source = path;
  return d;
}

std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(epoch) + 1);
  for (std::int64_t i = n - 1; i > 0; --i) {
    std::uniform_int_distribution<std::int64_t> d(0, i);
    std::swap(order[i], order[d(rng)]);
  }
  return order;
}

std::vector<std::int64_t> shard_iid(std::int64_t n, int clients, int index, std::uint64_t seed) {
  if (clients < 1 || index < 0 || index >= clients)
    throw ConfigError("shard: client index " + std::to_string(index) + " must be in [0, " +
                      std::to_string(clients) + ")");
  auto order = epoch_order(n, seed ^ 0x5A5A5A5Aull, -1);
  const std::int64_t begin = n * index / clients, end = n * (index + 1) / clients;
  std::vector<std::int64_t> mine(order.begin() + begin, order.begin() + end);
  std::sort(mine.begin(), mine.end());
  return mine;
}

std::vector<std::int64_t> shard_dirichlet(const torch::Tensor& labels, int clients, int index,
                                          double alpha, std::uint64_t seed) {
  if (clients < 1 || index < 0 || index >= clients)
    throw ConfigError("shard: client index " + std::to_string(index) + " must be in [0, " +
                      std::to_string(clients) + ")");
  if (!(alpha > 0)) throw ConfigError("shard: dirichlet alpha must be > 0");
  const auto y = labels.to(torch::kInt64).contiguous();
  const auto* py = y.data_ptr<std::int64_t>();
  const std::int64_t n = y.numel();
  const std::int64_t classes = n ? y.max().item<std::int64_t>() + 1 : 0;
  std::mt19937_64 rng(seed ^ 0xD1B54A32D192ED03ull);
  std::vector<std::int64_t> mine;
  for (std::int64_t c = 0; c < classes; ++c) {
    std::vector<std::int64_t> members;
    for (std::int64_t i = 0; i < n; ++i)
      if (py[i] == c) members.push_back(i);
    std::shuffle(members.begin(), members.end(), rng);
    std::gamma_distribution<double> gamma(alpha, 1.0);
    std::vector<double> p(static_cast<std::size_t>(clients));
    double sum = 0;
    for (auto& v : p) sum += (v = gamma(rng));
    double acc = 0;
    for (int k = 0; k < clients; ++k) {
      const auto begin = static_cast<std::size_t>(members.size() * (acc / sum));
      acc += p[k];
      const auto end = k + 1 == clients ? members.size() : static_cast<std::size_t>(members.size() * (acc / sum));
      if (k == index) mine.insert(mine.end(), members.begin() + begin, members.begin() + end);
    }
  }
  std::sort(mine.begin(), mine.end());
  return mine;
}

}  // namespace cutlayer::data
