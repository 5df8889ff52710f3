// Proves the ordering table in code is the one engine/FORMAT.md documents:
// every policy x rule cell is stated exactly once in the document and
// matches RulesFor (as TigerBeetle checks that each recovery case matches
// exactly once); each bug switch changes at most one field of any row, and
// exactly one of the row it is catalogued against.
#include "engine/ordering.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/bug_catalogue.h"

namespace qcrash::engine {
namespace {

constexpr OrderingPolicy kPolicies[] = {OrderingPolicy::kWritethrough, OrderingPolicy::kOrdered,
                                        OrderingPolicy::kLazy,         OrderingPolicy::kExtent,
                                        OrderingPolicy::kJournal,      OrderingPolicy::kUnsafe};

std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  std::string cell;
  std::getline(in, cell, '|');  // before the first bar
  while (std::getline(in, cell, '|')) {
    const size_t a = cell.find_first_not_of(' ');
    const size_t b = cell.find_last_not_of(' ');
    cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
  }
  if (!cells.empty() && cells.back().empty()) cells.pop_back();
  return cells;
}

// FORMAT.md's "Ordering table": rule name -> policy name -> mechanism name.
std::map<std::string, std::map<std::string, std::string>> ReadDocumentedTable(int& duplicates) {
  std::ifstream in(std::string(QCRASH_SOURCE_DIR) + "/engine/FORMAT.md");
  EXPECT_TRUE(in.good()) << "engine/FORMAT.md not found";
  std::string line;
  while (std::getline(in, line) && line != "### Ordering table (engine/ordering.cc)") {
  }
  std::vector<std::string> header;
  std::map<std::string, std::map<std::string, std::string>> table;
  duplicates = 0;
  while (std::getline(in, line)) {
    if (line.rfind("|", 0) != 0) {
      if (!header.empty()) break;  // the table ended
      continue;
    }
    std::vector<std::string> cells = Cells(line);
    if (header.empty()) {
      header = cells;
      continue;
    }
    if (!cells.empty() && cells[0].rfind("---", 0) == 0) continue;
    for (size_t c = 1; c < cells.size() && c < header.size(); ++c) {
      duplicates += table[cells[0]].count(header[c]);
      table[cells[0]][header[c]] = cells[c];
    }
  }
  return table;
}

TEST(OrderingTable, MatchesFormatMd) {
  int duplicates = 0;
  const auto documented = ReadDocumentedTable(duplicates);
  EXPECT_EQ(duplicates, 0) << "a cell is stated twice";
  size_t matched = 0;
  for (size_t r = 0; r < kRuleCount; ++r) {
    const Rule rule = static_cast<Rule>(r);
    auto row = documented.find(RuleName(rule));
    ASSERT_NE(row, documented.end()) << "FORMAT.md has no row for " << RuleName(rule);
    for (const OrderingPolicy policy : kPolicies) {
      auto cell = row->second.find(PolicyName(policy));
      ASSERT_NE(cell, row->second.end())
          << RuleName(rule) << " has no " << PolicyName(policy) << " column";
      EXPECT_EQ(cell->second, MechanismName(RulesFor(policy, {}).Of(rule)))
          << RuleName(rule) << " under " << PolicyName(policy);
      ++matched;
    }
  }
  // Nothing documented that the code lacks: every cell matched exactly once.
  size_t documented_cells = 0;
  for (const auto& [rule, row] : documented) documented_cells += row.size();
  EXPECT_EQ(documented_cells, matched) << "FORMAT.md states cells the code does not have";
  EXPECT_EQ(matched, kRuleCount * std::size(kPolicies));
}

int FieldsChanged(const OrderingRules& a, const OrderingRules& b) {
  int changed = (a.journal_checksums != b.journal_checksums) +
                (a.reuse_zero_allocation != b.reuse_zero_allocation) +
                (a.keep_dirty_on_failed_write != b.keep_dirty_on_failed_write) +
                (a.order_subcluster_data != b.order_subcluster_data) +
                (a.count_compressed_users != b.count_compressed_users) +
                (a.order_refcount_switch != b.order_refcount_switch) +
                (a.order_downgrade_switch != b.order_downgrade_switch) +
                (a.drop_tail_before_shrink != b.drop_tail_before_shrink) +
                (a.copy_before_backing_switch != b.copy_before_backing_switch);
  for (size_t r = 0; r < kRuleCount; ++r) changed += a.how[r] != b.how[r];
  return changed;
}

TEST(OrderingTable, EachBugSwitchIsOneField) {
  ASSERT_FALSE(KnownBugs().empty());
  for (const KnownBug& bug : KnownBugs()) {
    BugSwitches switches;
    ASSERT_TRUE(EnableBug(bug.name, switches).ok()) << bug.name;
    for (const OrderingPolicy policy : kPolicies) {
      EXPECT_LE(FieldsChanged(RulesFor(policy, {}), RulesFor(policy, switches)), 1)
          << bug.name << " under " << PolicyName(policy);
    }
    // Under the policy the catalogue shows it with, it takes one guarantee away.
    EXPECT_EQ(FieldsChanged(RulesFor(bug.policy, {}), RulesFor(bug.policy, switches)), 1)
        << bug.name;
    EXPECT_EQ(EnabledBugNames(switches), std::vector<std::string>{bug.name});
  }
  BugSwitches none;
  EXPECT_FALSE(EnableBug("no-such-bug", none).ok());
  EXPECT_TRUE(EnabledBugNames(none).empty());
}

// The safe policies order every rule that applies to them; unsafe orders
// nothing the engine could skip (only what recovery and the guest's own
// flush need).
TEST(OrderingTable, OnlyUnsafeLeavesPointerRulesUnordered) {
  for (const OrderingPolicy policy : kPolicies) {
    const OrderingRules rules = RulesFor(policy, {});
    for (const Rule rule :
         {Rule::kRefcountBeforePointer, Rule::kContentsBeforePointer, Rule::kDataBeforePointer,
          Rule::kUnlinkBeforeFree, Rule::kFreeBeforeReuse, Rule::kRelocateThenSwitch}) {
      EXPECT_EQ(rules.Of(rule) == Mechanism::kNone, policy == OrderingPolicy::kUnsafe)
          << RuleName(rule) << " under " << PolicyName(policy);
    }
    EXPECT_EQ(rules.journal(), policy == OrderingPolicy::kJournal);
    EXPECT_NE(rules.Of(Rule::kGuestFlush), Mechanism::kNone) << PolicyName(policy);
  }
}

}  // namespace
}  // namespace qcrash::engine
