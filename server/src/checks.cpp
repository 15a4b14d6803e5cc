#include "cutlayer/server/checks.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cutlayer/error.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::server {

std::string clean_text(const std::string& text) {
  std::string out = text.substr(0, kMaxErrorText);
  for (auto& ch : out)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
  if (text.size() > kMaxErrorText) out += "...";
  return out;
}

std::string error_text(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e))
    return clean_text(std::string("the server could not process this message: ") + c10->what_without_backtrace());
  if (dynamic_cast<const Error*>(&e)) return clean_text(e.what());
  return clean_text(std::string("the server could not process this message: ") + e.what());
}

wire::Message error_message(const std::string& text) {
  return wire::make_message(wire::ErrorMsg{static_cast<std::uint16_t>(wire::ErrorCode::kProtocol), text});
}

}  // namespace cutlayer::server
