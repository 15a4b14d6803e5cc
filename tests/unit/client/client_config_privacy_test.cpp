// The client config's "privacy" object: cut_norm, the decoder adversary and the label
// defence land in the options (cut_norm in train's too), and what is out of range or does
// not fit the run is refused naming the file, the field and the reason.
#include <gtest/gtest.h>

#include <string>

#include "client_config_text.h"
#include "cutlayer/client/client_config.h"
#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/privacy/nopeek.h"

namespace cutlayer::client {
namespace {

using testing_client::expect_refused;
using testing_client::load_text;
using testing_client::refusal_of;
using testing_config::contains;
using testing_config::Refusal;

TEST(ClientConfigPrivacy, AbsentFieldsTakeTheDefaults) {
  const auto c = load_text(R"({"train": {"u_shaped": true}, "privacy": {"alpha": 0.1}})");
  const privacy::PrivacyOptions d;
  EXPECT_FALSE(c.nopeek.cut_norm);
  EXPECT_FALSE(c.train.cut_norm);
  EXPECT_EQ(c.nopeek.adversary.weight, d.adversary.weight);
  EXPECT_EQ(c.nopeek.adversary.lr, d.adversary.lr);
  EXPECT_FALSE(c.nopeek.adversary.active());
  EXPECT_EQ(c.nopeek.label_defense.kind, "none");
  EXPECT_EQ(c.nopeek.label_defense.sigma, 0.0);
  EXPECT_FALSE(c.nopeek.label_defense.clip);
  EXPECT_FALSE(c.nopeek.label_defense.active());
  // Objects present but empty: the defaults too.
  const auto e = load_text(R"({"train": {}, "privacy": {"adversary": {}, "label_defense": {}}})");
  EXPECT_FALSE(e.nopeek.adversary.active());
  EXPECT_EQ(e.nopeek.adversary.lr, d.adversary.lr);
  EXPECT_FALSE(e.nopeek.label_defense.active());
}

TEST(ClientConfigPrivacy, AcceptedValuesLandInTheOptions) {
  const auto c = load_text(R"({"train": {"u_shaped": true}, "privacy": {"cut_norm": true,
      "adversary": {"weight": 0.5, "lr": 0.01},
      "label_defense": {"kind": "noise", "sigma": 2.5, "clip": true}}})");
  EXPECT_TRUE(c.has_train);
  EXPECT_TRUE(c.nopeek.cut_norm);
  EXPECT_TRUE(c.train.cut_norm);  // copied: it builds the front's last layer
  EXPECT_DOUBLE_EQ(c.nopeek.adversary.weight, 0.5);
  EXPECT_DOUBLE_EQ(c.nopeek.adversary.lr, 0.01);
  EXPECT_TRUE(c.nopeek.adversary.active());
  EXPECT_EQ(c.nopeek.label_defense.kind, "noise");
  EXPECT_DOUBLE_EQ(c.nopeek.label_defense.sigma, 2.5);
  EXPECT_TRUE(c.nopeek.label_defense.clip);
  EXPECT_TRUE(c.nopeek.label_defense.active());
}

TEST(ClientConfigPrivacy, FieldsAreReadAtTheirBounds) {
  const auto hi = load_text(R"({"train": {"u_shaped": true}, "privacy": {"cut_norm": false,
      "adversary": {"weight": 1e6, "lr": 10}, "label_defense": {"kind": "noise", "sigma": 1000, "clip": false}}})");
  EXPECT_FALSE(hi.train.cut_norm);
  EXPECT_DOUBLE_EQ(hi.nopeek.adversary.weight, 1e6);
  EXPECT_DOUBLE_EQ(hi.nopeek.adversary.lr, 10.0);
  EXPECT_DOUBLE_EQ(hi.nopeek.label_defense.sigma, 1000.0);
  EXPECT_FALSE(hi.nopeek.label_defense.clip);

  const auto lo = load_text(R"({"train": {"u_shaped": true}, "privacy": {
      "adversary": {"weight": 0, "lr": 1e-9}, "label_defense": {"kind": "noise", "sigma": 0, "clip": true}}})");
  EXPECT_DOUBLE_EQ(lo.nopeek.adversary.weight, 0.0);
  EXPECT_FALSE(lo.nopeek.adversary.active());
  EXPECT_DOUBLE_EQ(lo.nopeek.adversary.lr, 1e-9);
  EXPECT_EQ(lo.nopeek.label_defense.kind, "noise");
  EXPECT_DOUBLE_EQ(lo.nopeek.label_defense.sigma, 0.0);
}

TEST(ClientConfigPrivacy, ANoiseDefenceThatChangesNothingIsRefused) {
  expect_refused(R"({"train": {"u_shaped": true}, "privacy": {"label_defense": {"kind": "noise", "sigma": 0}}})",
                 "privacy.label_defense.sigma", "would change nothing");
}

TEST(ClientConfigPrivacy, CutNormIsCopiedIntoTrainForEveryRun) {
  const auto c = load_text(R"({"train": {"u_shaped": false}, "privacy": {"cut_norm": true}})");
  EXPECT_TRUE(c.train.cut_norm);
  EXPECT_FALSE(c.train.u_shaped);
  // Written in either order, privacy before or after train.
  const auto d = load_text(R"({"privacy": {"cut_norm": true}, "train": {}})");
  EXPECT_TRUE(d.train.cut_norm);
  // Without a train object there is nothing to copy into.
  const auto e = load_text(R"({"privacy": {"cut_norm": true}})");
  EXPECT_FALSE(e.has_train);
  EXPECT_TRUE(e.nopeek.cut_norm);
}

TEST(ClientConfigPrivacy, LabelDefenseKindNoneWithoutSigmaIsFineInAVanillaRun) {
  // Explicitly off: no labels to protect and nothing to refuse.
  const auto c = load_text(R"({"train": {"u_shaped": false}, "privacy": {"label_defense": {"kind": "none"}}})");
  EXPECT_FALSE(c.nopeek.label_defense.active());
}

TEST(ClientConfigPrivacy, OutOfRangeFieldsAreRefusedNamingTheFieldAndTheReason) {
  struct Case {
    const char* privacy;
    const char* field;
    const char* reason;
  };
  const Case cases[] = {
      {R"({"label_defense": {"kind": "bogus"}})", "privacy.label_defense.kind", "must be one of none|noise"},
      {R"({"label_defense": {"kind": "bogus"}})", "privacy.label_defense.kind", "got \"bogus\""},
      {R"({"label_defense": {"kind": 1}})", "privacy.label_defense.kind", "must be a string"},
      {R"({"label_defense": {"kind": "noise", "sigma": -1}})", "privacy.label_defense.sigma", "must be in [0, "},
      {R"({"label_defense": {"kind": "noise", "sigma": -1}})", "privacy.label_defense.sigma", "got -1"},
      {R"({"label_defense": {"kind": "noise", "sigma": 1001}})", "privacy.label_defense.sigma", "must be in [0, "},
      {R"({"label_defense": {"kind": "noise", "sigma": "1"}})", "privacy.label_defense.sigma", "must be a number"},
      {R"({"label_defense": {"kind": "noise", "clip": 1}})", "privacy.label_defense.clip", "must be true or false"},
      {R"({"label_defense": {"kind": "none", "sigma": 1}})", "privacy.label_defense.sigma", "kind is \"none\""},
      {R"({"label_defense": {"sigma": 0.5}})", "privacy.label_defense.sigma", "set kind to \"noise\""},
      {R"({"label_defense": "noise"})", "privacy.label_defense", "must be an object"},
      {R"({"adversary": {"weight": -1}})", "privacy.adversary.weight", "must be in [0, "},
      {R"({"adversary": {"weight": -1}})", "privacy.adversary.weight", "got -1"},
      {R"({"adversary": {"weight": 2e6}})", "privacy.adversary.weight", "must be in [0, "},
      {R"({"adversary": {"weight": 1, "lr": 0}})", "privacy.adversary.lr", "must be in ["},
      {R"({"adversary": {"weight": 1, "lr": 11}})", "privacy.adversary.lr", "got 11"},
      {R"({"adversary": 1})", "privacy.adversary", "must be an object"},
      {R"({"cut_norm": "yes"})", "privacy.cut_norm", "must be true or false"},
      {R"({"cut_norm": 1})", "privacy.cut_norm", "must be true or false"},
  };
  for (const auto& c : cases)
    expect_refused(std::string(R"({"train": {"u_shaped": true}, "privacy": )") + c.privacy + "}", c.field,
                   c.reason);
}

TEST(ClientConfigPrivacy, LabelDefenseNeedsUShapedTraining) {
  const char* vanilla[] = {
      R"({"train": {"u_shaped": false}, "privacy": {"label_defense": {"kind": "noise", "sigma": 1}}})",
      R"({"train": {}, "privacy": {"label_defense": {"kind": "noise", "sigma": 1}}})",  // u_shaped defaults false
      R"({"privacy": {"label_defense": {"kind": "noise", "clip": true}}, "train": {"lr": 0.1}})",
  };
  for (const char* text : vanilla) {
    expect_refused(text, "privacy.label_defense", "train.u_shaped is false");
    expect_refused(text, "privacy.label_defense", "set train.u_shaped to true or remove label_defense");
  }
  // U-shaped: accepted.
  const auto c = load_text(R"({"train": {"u_shaped": true}, "privacy": {"label_defense": {"kind": "noise", "sigma": 1}}})");
  EXPECT_TRUE(c.nopeek.label_defense.active());
  EXPECT_TRUE(c.train.u_shaped);
}

TEST(ClientConfigPrivacy, UnknownFieldsAreRefusedNamingThemAndTheKnownOnes) {
  {
    const auto r = refusal_of(R"({"train": {"u_shaped": true}, "privacy": {"label_defense":
        {"kind": "noise", "sigma": 1, "noise": 2}}})");
    EXPECT_EQ(r.message.rfind(r.path + ": ", 0), 0u) << r.message;
    EXPECT_TRUE(contains(r.message, "unknown field `privacy.label_defense.noise`")) << r.message;
    for (const char* known : {"kind", "sigma", "clip"})
      EXPECT_TRUE(contains(r.message, known)) << "known fields should list " << known << ": " << r.message;
  }
  {
    const auto r = refusal_of(R"({"train": {}, "privacy": {"adversary": {"weight": 1, "steps": 3}}})");
    EXPECT_EQ(r.message.rfind(r.path + ": ", 0), 0u) << r.message;
    EXPECT_TRUE(contains(r.message, "unknown field `privacy.adversary.steps`")) << r.message;
    for (const char* known : {"weight", "lr"})
      EXPECT_TRUE(contains(r.message, known)) << "known fields should list " << known << ": " << r.message;
  }
  {
    const auto r = refusal_of(R"({"train": {}, "privacy": {"cutnorm": true}})");
    EXPECT_TRUE(contains(r.message, "unknown field `privacy.cutnorm`")) << r.message;
    // read_privacy_options reads the nested objects whether present or not, so they are
    // listed too.
    for (const char* known : {"cut_norm", "alpha", "noise_std", "alpha_warmup_steps", "adversary", "label_defense"})
      EXPECT_TRUE(contains(r.message, known)) << "known fields should list " << known << ": " << r.message;
  }
}

TEST(ClientConfigPrivacy, ReadPrivacyOptionsAloneReadsTheObject) {
  auto doc = config::Document::parse(R"({"privacy": {"alpha": 0.25, "cut_norm": true,
      "adversary": {"weight": 3}, "label_defense": {"kind": "noise", "sigma": 0.75}}})", "inline.json");
  auto root = doc->root();
  auto p = root.child("privacy");
  const auto o = read_privacy_options(p);
  EXPECT_DOUBLE_EQ(o.alpha, 0.25);
  EXPECT_TRUE(o.cut_norm);
  EXPECT_DOUBLE_EQ(o.adversary.weight, 3.0);
  EXPECT_DOUBLE_EQ(o.adversary.lr, 1e-3);
  EXPECT_EQ(o.label_defense.kind, "noise");
  EXPECT_DOUBLE_EQ(o.label_defense.sigma, 0.75);
}

TEST(ClientConfigPrivacy, IdentityStatesTheNewOptionsOnlyWhenActive) {
  privacy::PrivacyOptions o;
  const auto base = privacy::identity(o);
  EXPECT_FALSE(contains(base, "adversary"));
  EXPECT_FALSE(contains(base, "label_defense"));
  o.cut_norm = true;  // the front's fingerprint covers it
  EXPECT_EQ(privacy::identity(o), base);
  o.adversary.lr = 0.5;  // weight 0: off
  EXPECT_EQ(privacy::identity(o), base);
  o.adversary.weight = 2;
  const auto adv = privacy::identity(o);
  EXPECT_TRUE(contains(adv, "adversary weight=2 lr=0.5")) << adv;
  o.label_defense.sigma = 1.5;  // kind none: off
  EXPECT_EQ(privacy::identity(o), adv);
  o.label_defense.kind = "noise";
  const auto ld = privacy::identity(o);
  EXPECT_TRUE(contains(ld, "label_defense kind=noise sigma=1.5 clip=false")) << ld;
  o.label_defense.clip = true;
  EXPECT_NE(privacy::identity(o), ld);
  o.label_defense.sigma = 2;
  EXPECT_NE(privacy::identity(o), ld);
}

}  // namespace
}  // namespace cutlayer::client
