// The known-bug catalogue: every bug switch of the engine, with the thread
// it comes from, what it breaks, the invariant the harness reports, and the
// built-in workload and policy that show it. One table: EnableBug, the
// tests, `qcrash explore --list-bugs [--output=json]` and ci/crash_gate.py
// all read it. A switch is one field of the ordering table
// (engine/ordering.cc RulesFor).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/options.h"
#include "engine/status.h"

namespace qcrash::engine {

struct KnownBug {
  const char* name;             // --bug NAME
  bool BugSwitches::*field;     // the switch
  const char* seed;             // the discussion it comes from
  const char* breaks;           // what goes wrong when it is on
  const char* invariant;        // what the harness reports (docs/DESIGN.md invariants)
  const char* workload;         // the built-in workload that shows it
  OrderingPolicy policy;        // ... under this policy
  const char* journal_options;  // ... with these --journal options ("" for none)
  const char* enumerator;       // ... and this enumerator (`explore --enumerator`)
};

std::span<const KnownBug> KnownBugs();
const KnownBug* FindKnownBug(std::string_view name);

// Turns a bug switch on by its catalogue name.
Status EnableBug(std::string_view name, BugSwitches& switches);
// The catalogue names of the switches that are on, in catalogue order.
std::vector<std::string> EnabledBugNames(const BugSwitches& switches);

}  // namespace qcrash::engine
