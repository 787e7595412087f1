#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support/json.h"

namespace tierkv::tools {
namespace {

TEST(JsonWriterTest, PlacesCommasAndNests) {
  JsonWriter w;
  w.begin_object()
      .field("a", uint64_t{1})
      .key("b")
      .begin_array()
      .value(true)
      .null()
      .begin_object()
      .end_object()
      .begin_array()
      .end_array()
      .end_array()
      .field("c", "x")
      .end_object();
  EXPECT_EQ(w.str(), R"({"a":1,"b":[true,null,{},[]],"c":"x"})");
  EXPECT_TRUE(w.complete());
}

TEST(JsonWriterTest, EscapesStrings) {
  std::string out;
  append_json_string(out, "q\"b\\s/\n\t\r\b\f\x01\x1f\x7f");
  EXPECT_EQ(out, R"("q\"b\\s/\n\t\r\b\f\u0001\u001f\u007f")");
}

TEST(JsonWriterTest, KeepsValidUtf8AndReplacesInvalidBytes) {
  std::string out;
  append_json_string(out, "µs \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(out, "\"µs \xe2\x82\xac \xf0\x9f\x98\x80\"");
  out.clear();
  // A lone continuation byte, a truncated sequence, an overlong '/', a surrogate.
  append_json_string(out,
                     "a\x80"
                     "b\xe2\x82"
                     "c\xc0\xaf"
                     "d\xed\xa0\x80");
  EXPECT_EQ(out, R"("a\ufffdb\ufffd\ufffdc\ufffd\ufffdd\ufffd\ufffd\ufffd")");
}

TEST(JsonWriterTest, WritesNumbersThatReadBack) {
  JsonWriter w;
  w.begin_array()
      .value(0.1)
      .value(1e300)
      .value(-2.5)
      .value(int64_t{-7})
      .value(std::numeric_limits<uint64_t>::max())
      .value(std::nan(""))
      .value(std::numeric_limits<double>::infinity())
      .end_array();
  EXPECT_EQ(w.str(), "[0.1,1e+300,-2.5,-7,18446744073709551615,null,null]");
}

TEST(JsonWriterTest, OutputParsesAsJson) {
  JsonWriter w;
  w.begin_object()
      .field("tenant", std::string("we\"ird\n\xff name"))
      .field("ratio", 0.875)
      .key("tiers")
      .begin_array()
      .begin_object()
      .field("tier", "host")
      .field("enabled", true)
      .end_object()
      .end_array()
      .end_object();
  std::string error;
  const auto doc = testing::parse_json(w.str(), &error);
  ASSERT_TRUE(doc) << error << "\n" << w.str();
  EXPECT_EQ((*doc)["tenant"].as_string(), "we\"ird\n\xef\xbf\xbd name");
  EXPECT_DOUBLE_EQ((*doc)["ratio"].as_number(), 0.875);
  EXPECT_EQ((*doc)["tiers"].as_array()[0]["tier"].as_string(), "host");
}

}  // namespace
}  // namespace tierkv::tools
