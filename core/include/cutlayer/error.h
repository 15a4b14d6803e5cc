// The error hierarchy. Every message says what went wrong and what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace cutlayer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A configuration file or flag is wrong: names the file, the field and the fix.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A peer sent something that does not follow the wire protocol.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// Authentication failed: unknown key, bad tag, refused join.
class AuthError : public Error {
 public:
  using Error::Error;
};

// A file or socket operation failed; the text names the path or endpoint.
class IoError : public Error {
 public:
  using Error::Error;
};

// An OpenSSL call failed; the text carries OpenSSL's own error string.
class CryptoError : public Error {
 public:
  using Error::Error;
};

// A bug in cutlayer itself, not a user's mistake: an API called out of order or with
// arguments its caller should have checked. The text names the function.
class InternalError : public Error {
 public:
  using Error::Error;
};

// A wait ended because shutdown was asked for (SIGINT/SIGTERM): not a failure, and the
// caller winds down (the client still writes its summary).
class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted: shutdown requested") {}
};

}  // namespace cutlayer
