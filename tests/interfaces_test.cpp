// interfaces() on this host's loopback, and rate()'s step over known values.

#include <net/if.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/vql_test_util.hpp"

namespace outpost::vql {

namespace {

const Registry& registry() { return default_registry(); }

std::vector<std::string> strings_of(const Value* v) {
  std::vector<std::string> out;
  if (v && v->as_list())
    for (auto& item : *v->as_list()) out.push_back(item.as_string() ? *item.as_string() : "<not a string>");
  return out;
}

TEST(Interfaces, LoopbackIsListedAsGoListsIt) {
  auto rows = run_rows(registry(), "SELECT * FROM interfaces() WHERE Name = 'lo'");
  ASSERT_EQ(rows.size(), 1u);
  const Row& lo = rows[0];
  std::vector<std::string> columns;
  for (auto& [name, value] : lo.items()) columns.push_back(name);
  EXPECT_EQ(columns, (std::vector<std::string>{"Name", "HardwareAddr", "MTU", "Index", "Flags", "Loopback",
                                               "PointToPoint", "Up", "HardwareAddrString", "Addrs", "AddrsString",
                                               "MulticastAddrs", "MulticastAddrsString"}));
  EXPECT_EQ(*lo.find("Loopback")->as_string(), "Y");
  EXPECT_EQ(*lo.find("PointToPoint")->as_string(), "N");
  EXPECT_EQ(*lo.find("Up")->as_string(), "Y");
  EXPECT_EQ(lo.find("Flags")->as_string()->rfind("up|loopback", 0), 0u) << *lo.find("Flags")->as_string();
  EXPECT_GT(*lo.find("MTU")->as_int(), 0);
  EXPECT_EQ(*lo.find("Index")->as_int(), static_cast<int64_t>(::if_nametoindex("lo")));
  EXPECT_TRUE(lo.find("HardwareAddr")->is_null());  // all zero: none, as Go says
  EXPECT_EQ(*lo.find("HardwareAddrString")->as_string(), "");

  auto cidrs = strings_of(lo.find("AddrsString"));
  EXPECT_NE(std::find(cidrs.begin(), cidrs.end(), "127.0.0.1/8"), cidrs.end());
  const List* addrs = lo.find("Addrs")->as_list();
  ASSERT_TRUE(addrs);
  ASSERT_EQ(addrs->size(), cidrs.size());
  size_t v4 = std::find(cidrs.begin(), cidrs.end(), "127.0.0.1/8") - cidrs.begin();
  const Dict* net = (*addrs)[v4].as_dict();
  ASSERT_TRUE(net);
  EXPECT_EQ(*net->find("IP")->as_string(), "127.0.0.1");
  EXPECT_EQ(*net->find("Mask")->as_string(), std::string("\xff\0\0\0", 4));  // the mask's raw bytes

  auto groups = strings_of(lo.find("MulticastAddrsString"));
  const Value* multicast = lo.find("MulticastAddrs");
  EXPECT_EQ(multicast->is_null() ? 0 : multicast->as_list()->size(), groups.size());
}

TEST(Interfaces, EveryRowHasAnIndexAndYesNoFlags) {
  auto rows = run_rows(registry(), "SELECT Name, Index, Up, Loopback FROM interfaces()");
  ASSERT_FALSE(rows.empty());
  int64_t last = 0;
  for (auto& row : rows) {
    std::string name = *row.find("Name")->as_string();
    int64_t index = *row.find("Index")->as_int();
    EXPECT_EQ(index, static_cast<int64_t>(::if_nametoindex(name.c_str()))) << name;
    EXPECT_GE(index, last) << "rows in index order";
    last = index;
    for (const char* yn : {"Up", "Loopback"}) {
      std::string v = *row.find(yn)->as_string();
      EXPECT_TRUE(v == "Y" || v == "N") << name << " " << yn << " " << v;
    }
  }
}

TEST(Interfaces, RefusesArguments) {
  EXPECT_NE(error_of_run([] { run_rows(registry(), "SELECT * FROM interfaces(name='lo')"); }), "<no error>");
}

// rate()'s step at one call site: NULL first, then the slope to the last row.
TEST(Rate, StepOverKnownValues) {
  Value state;
  EXPECT_TRUE(rate_step(state, int64_t{10}, int64_t{1}).is_null());
  EXPECT_EQ(*rate_step(state, int64_t{30}, int64_t{3}).as_double(), 10.0);
  EXPECT_TRUE(rate_step(state, int64_t{40}, int64_t{3}).is_null());  // y unchanged: no rate
  EXPECT_EQ(*rate_step(state, 70.0, int64_t{5}).as_double(), 15.0);  // from the last row: (70 - 40) / (5 - 3)
  EXPECT_TRUE(rate_step(state, Value("x"), int64_t{6}).is_null());    // not a number: the state stays
  EXPECT_EQ(*rate_step(state, int64_t{60}, int64_t{6}).as_double(), -10.0);
}

// Registered with its arguments (so that queries naming it pass the check);
// the first row has no rate, with or without the engine's state.
TEST(Rate, FirstRowIsNullAndBothArgumentsRequired) {
  EXPECT_EQ(json_lines(run_rows(registry(), "SELECT rate(x=1, y=1) AS R FROM scope()")),
            std::vector<std::string>{R"({"R":null})"});
  EXPECT_NE(error_of_run([] { run_rows(registry(), "SELECT rate(x=1) AS R FROM scope()"); }).find("y"),
            std::string::npos);
}

// Two rate() calls in one SELECT: each keeps its own last row (the
// engine's aggregate slot of its call site).
TEST(Rate, KeepsStatePerCallSite) {
  auto rows = run_rows(registry(),
                       "SELECT rate(x=_value * _value, y=_value) AS A, rate(x=_value, y=_value * 2) AS B "
                       "FROM foreach(row=[1, 2, 3, 4])");
  EXPECT_EQ(json_lines(rows), (std::vector<std::string>{R"({"A":null,"B":null})", R"({"A":3,"B":0.5})",
                                                        R"({"A":5,"B":0.5})", R"({"A":7,"B":0.5})"}));
}

}  // namespace
}  // namespace outpost::vql
