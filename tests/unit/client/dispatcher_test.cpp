// The client's one wait loop, over a scripted link and a driven clock: replies matched by
// type and step, strays routed, server errors, the stop flag and the deadline.
#include "cutlayer/client/dispatcher.h"

#include <gtest/gtest.h>

#include "cutlayer/error.h"
#include "scripted_link.h"

namespace cutlayer::client {
namespace {

using namespace std::chrono_literals;

wire::Message cut_grad(std::uint64_t step, float loss = 0, std::uint32_t correct = 0) {
  wire::CutGrad g;
  g.step = step;
  g.loss = loss;
  g.correct = correct;
  return wire::make_message(g, {torch::ones({2, 3})});
}

wire::Message update(std::uint64_t round) {
  wire::Update u;
  u.round = round;
  return wire::make_message(u);
}

wire::Message reject(std::uint64_t seq) {
  wire::SyncReject r;
  r.seq = seq;
  r.reason = "too stale";
  return wire::make_message(r);
}

struct DispatcherTest : ::testing::Test {
  test::FakeClock clock;
  test::ScriptedLink link{clock};
  Dispatcher d{link, DispatcherOptions{3s, 500ms}, std::ref(clock)};
  std::vector<wire::MsgType> strays;
  void route_strays() {
    d.set_stray_handler([this](wire::Message& m) {
      if (m.type != wire::MsgType::kUpdate && m.type != wire::MsgType::kSyncReject) return false;
      strays.push_back(m.type);
      return true;
    });
  }
};

TEST_F(DispatcherTest, AwaitReturnsTheReplyToItsStepAndDropsStaleOnes) {
  link.inbox.push_back(cut_grad(3));  // answers a step from before a re-join
  link.inbox.push_back(std::nullopt);
  link.inbox.push_back(wire::make_message(wire::ServerActivations{5}));  // same step, other type
  link.inbox.push_back(cut_grad(5, 0.25f, 7));
  link.inbox.push_back(cut_grad(6));  // not read: the wait ends at its reply
  const auto r = d.await<wire::CutGrad>(5);
  EXPECT_EQ(r.meta.step, 5u);
  EXPECT_FLOAT_EQ(r.meta.loss, 0.25f);
  EXPECT_EQ(r.meta.correct, 7u);
  ASSERT_EQ(r.msg.tensors.size(), 1u);
  EXPECT_EQ(r.msg.tensors[0].sizes(), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(d.dropped(), 2u);
  EXPECT_EQ(link.inbox.size(), 1u);
}

TEST_F(DispatcherTest, UpdatesAndRejectsGoToTheStrayHandlerInOrder) {
  route_strays();
  link.inbox.push_back(update(1));
  link.inbox.push_back(cut_grad(1));
  link.inbox.push_back(reject(4));
  link.inbox.push_back(update(2));
  link.inbox.push_back(cut_grad(2));
  EXPECT_EQ(d.await<wire::CutGrad>(2).meta.step, 2u);
  EXPECT_EQ(strays, (std::vector<wire::MsgType>{wire::MsgType::kUpdate, wire::MsgType::kSyncReject,
                                                wire::MsgType::kUpdate}));
  EXPECT_EQ(d.dropped(), 1u);  // the stale CutGrad only
}

TEST_F(DispatcherTest, WithoutAStrayHandlerUpdatesAreDropped) {
  link.inbox.push_back(update(1));
  link.inbox.push_back(cut_grad(1));
  EXPECT_EQ(d.await<wire::CutGrad>(1).meta.step, 1u);
  EXPECT_EQ(d.dropped(), 1u);
}

TEST_F(DispatcherTest, AServerErrorEndsTheWaitWithTheServersWords) {
  link.inbox.push_back(wire::make_message(wire::ErrorMsg{1, "cut activations of the wrong shape"}));
  link.inbox.push_back(cut_grad(1));
  try {
    d.await<wire::CutGrad>(1);
    FAIL() << "no error";
  } catch (const ProtocolError& e) {
    EXPECT_STREQ(e.what(), "server: cut activations of the wrong shape");
  }
  EXPECT_EQ(link.inbox.size(), 1u);
}

TEST_F(DispatcherTest, TheStopFlagEndsTheWait) {
  std::atomic<bool> stop{true};
  d.set_stop(&stop);
  link.inbox.push_back(cut_grad(1));
  EXPECT_THROW(d.await<wire::CutGrad>(1), Interrupted);
  EXPECT_EQ(link.polls, 0);  // a set flag is seen before the link is read

  // A signal during the wait ends it at the next poll.
  stop = false;
  link.inbox.clear();
  link.before_recv = [&] {
    if (link.polls == 2) stop = true;
  };
  EXPECT_THROW(d.await<wire::CutGrad>(1), Interrupted);
  EXPECT_EQ(link.polls, 2);
}

TEST_F(DispatcherTest, TheDeadlineEndsAQuietWaitAndNamesWhatWasAwaited) {
  const auto start = clock.t;
  try {
    d.await<wire::EvalResult>(9);
    FAIL() << "no timeout";
  } catch (const IoError& e) {
    EXPECT_STREQ(e.what(), "no EvalResult for step 9 within 3 s");
  }
  EXPECT_EQ(link.polls, 6);  // 3 s of 500 ms polls
  EXPECT_EQ(clock.t - start, 3s);
}

TEST_F(DispatcherTest, StaleTrafficDoesNotPostponeTheDeadline) {
  for (int i = 0; i < 5000; ++i) link.inbox.push_back(cut_grad(1));  // 1 ms each on the clock
  EXPECT_THROW(d.await<wire::CutGrad>(2), IoError);
  EXPECT_EQ(d.dropped(), 3000u);
}

TEST_F(DispatcherTest, ALostSessionComesThroughForTheRejoin) {
  link.gone = true;
  EXPECT_THROW(d.await<wire::CutGrad>(1), IoError);
}

TEST_F(DispatcherTest, WaitForChecksFirstAndAfterEveryMessageHandedOn) {
  route_strays();
  d.wait_for([] { return true; }, [] { return std::string("nothing"); });
  EXPECT_EQ(link.polls, 0);

  link.inbox.push_back(update(1));
  link.inbox.push_back(std::nullopt);
  link.inbox.push_back(update(2));
  link.inbox.push_back(update(3));
  d.wait_for([&] { return strays.size() == 2; }, [] { return std::string("two updates"); });
  EXPECT_EQ(strays.size(), 2u);
  EXPECT_EQ(link.inbox.size(), 1u);

  try {
    d.wait_for([] { return false; }, [] { return std::string("Update for contribution 4"); });
    FAIL() << "no timeout";
  } catch (const IoError& e) {
    EXPECT_STREQ(e.what(), "no Update for contribution 4 within 3 s");
  }
}

TEST_F(DispatcherTest, AwaitFirstTakesTheNextOfItsTypeWhateverItAnswers) {
  route_strays();
  link.inbox.push_back(update(7));
  wire::ModelSnapshot s;
  s.round = 12;
  link.inbox.push_back(wire::make_message(s));
  EXPECT_EQ(d.await_first<wire::ModelSnapshot>("model snapshot").meta.round, 12u);
  EXPECT_EQ(strays.size(), 1u);
}

TEST_F(DispatcherTest, AMalformedReplyIsAProtocolError) {
  auto bad = cut_grad(1);
  bad.meta.resize(3);
  link.inbox.push_back(bad);
  EXPECT_THROW(d.await<wire::CutGrad>(1), ProtocolError);
}

}  // namespace
}  // namespace cutlayer::client
