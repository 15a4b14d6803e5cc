#include "cutlayer/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "cutlayer/error.h"

namespace cutlayer::log {
namespace {

std::mutex g_mutex;
spdlog::level::level_enum g_level = spdlog::level::info;

spdlog::sink_ptr shared_sink() {
  static spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  return sink;
}

}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = std::make_shared<spdlog::logger>(component, shared_sink());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  logger->set_level(g_level);
  spdlog::register_logger(logger);
  return logger;
}

const std::vector<std::string>& level_names() {
  static const std::vector<std::string> names = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  return names;
}

bool is_level(std::string_view level) {
  for (const auto& name : level_names())
    if (level == name) return true;
  return false;
}

std::string peer_text(std::string_view text, std::size_t max_bytes) {
  static const char* kDigits = "0123456789abcdef";
  const std::size_t keep = text.size() < max_bytes ? text.size() : max_bytes;
  std::string out;
  out.reserve(keep + 16);
  for (std::size_t i = 0; i < keep; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    }
  }
  if (keep < text.size()) out += "... (" + std::to_string(text.size() - keep) + " more bytes)";
  return out;
}

void set_level(std::string_view level) {
  if (!is_level(level))
    throw ConfigError("log level must be one of trace|debug|info|warn|error|critical|off, got '" +
                      std::string(level) + "'");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_level = spdlog::level::from_str(std::string(level));
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->set_level(g_level); });
}

}  // namespace cutlayer::log
