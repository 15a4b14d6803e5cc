// The transport's public headers compile without ZeroMQ or OpenSSL: the training code that
// includes them (client/, server/) never sees either. Built apart from cutlayer_shared_tests,
// whose precompiled header holds <zmq.hpp>, and with no include path into shared/src.
#include "cutlayer/transport/client_transport.h"
#include "cutlayer/transport/link.h"
#include "cutlayer/transport/server_transport.h"
#include "cutlayer/wire/codec.h"
#include "cutlayer/wire/messages.h"

#if defined(CPPZMQ_VERSION) || defined(ZMQ_VERSION) || defined(ZMQ_VERSION_MAJOR)
#error "a transport or wire header includes ZeroMQ: keep it behind the Impl (shared/src)"
#endif
#if defined(OPENSSL_VERSION_NUMBER) || defined(OPENSSL_EVP_H) || defined(OPENSSL_TYPES_H)
#error "a transport or wire header includes OpenSSL: keep it behind the Impl (shared/src)"
#endif

#include <gtest/gtest.h>

#include <type_traits>

#include "cutlayer/error.h"

namespace cutlayer::transport {
namespace {

TEST(TransportHeaders, ClientTransportIsAMessageLink) {
  static_assert(std::is_abstract_v<MessageLink>);
  static_assert(std::is_base_of_v<MessageLink, ClientTransport>);
  static_assert(!std::is_copy_constructible_v<ClientTransport>);
  static_assert(!std::is_copy_constructible_v<ServerTransport>);
  SUCCEED();
}

TEST(TransportHeaders, OptionsKeepTheirDefaults) {
  const ClientTransportOptions client;
  EXPECT_EQ(client.server_host, "127.0.0.1");
  EXPECT_EQ(client.join_attempts, 5);
  EXPECT_EQ(client.socket.hwm, 8);
  EXPECT_EQ(client.limits.max_tensors, 64u);

  const ServerTransportOptions server;
  EXPECT_EQ(server.zap_domain, "cutlayer");
  EXPECT_EQ(server.session_timeout_ms, 30000);
  EXPECT_EQ(server.allow_list.size(), 0u);
  EXPECT_EQ(server.limits.max_meta_bytes, 64u * 1024);
}

TEST(TransportHeaders, ClientTransportRefusesBadKeysWithoutTouchingTheNetwork) {
  ClientTransportOptions o;
  o.server_public_key = "not a key";
  EXPECT_THROW(ClientTransport{o}, ConfigError);
}

}  // namespace
}  // namespace cutlayer::transport
