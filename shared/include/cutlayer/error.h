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

}  // namespace cutlayer
