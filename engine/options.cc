// Names of policies, preallocation modes and bug switches, as the CLI spells them.
#include "engine/options.h"

#include <string>

namespace qcrash::engine {

Status EnableFault(std::string_view name, BugSwitches& switches) {
  if (name == "skip-refcount-barrier") {
    switches.skip_refcount_barrier = true;
  } else if (name == "early-free-reuse") {
    switches.early_free_reuse = true;
  } else if (name == "zero-cluster-realloc") {
    switches.zero_cluster_realloc = true;
  } else if (name == "no-revoke") {
    switches.no_revoke = true;
  } else if (name == "unchecksummed-journal") {
    switches.unchecksummed_journal = true;
  } else {
    return Status::InvalidArgument("unknown fault '" + std::string(name) +
                                   "' (known: skip-refcount-barrier, early-free-reuse, "
                                   "zero-cluster-realloc, no-revoke, unchecksummed-journal)");
  }
  return Status::Ok();
}

const char* PolicyName(OrderingPolicy policy) {
  switch (policy) {
    case OrderingPolicy::kWritethrough: return "writethrough";
    case OrderingPolicy::kOrdered: return "ordered";
    case OrderingPolicy::kLazy: return "lazy";
    case OrderingPolicy::kExtent: return "extent";
    case OrderingPolicy::kUnsafe: return "unsafe";
    case OrderingPolicy::kJournal: return "journal";
  }
  return "?";
}

Result<OrderingPolicy> ParsePolicy(std::string_view name) {
  for (OrderingPolicy p : {OrderingPolicy::kWritethrough, OrderingPolicy::kOrdered,
                           OrderingPolicy::kLazy, OrderingPolicy::kExtent, OrderingPolicy::kUnsafe,
                           OrderingPolicy::kJournal}) {
    if (name == PolicyName(p)) return p;
  }
  return Status::InvalidArgument("unknown policy '" + std::string(name) +
                                 "' (known: writethrough, ordered, lazy, extent, journal, unsafe)");
}

const char* PreallocationName(Preallocation preallocation) {
  switch (preallocation) {
    case Preallocation::kOff: return "off";
    case Preallocation::kMetadata: return "metadata";
    case Preallocation::kFalloc: return "falloc";
    case Preallocation::kFull: return "full";
  }
  return "?";
}

Result<Preallocation> ParsePreallocation(std::string_view name) {
  for (Preallocation p : {Preallocation::kOff, Preallocation::kMetadata, Preallocation::kFalloc,
                          Preallocation::kFull}) {
    if (name == PreallocationName(p)) return p;
  }
  return Status::InvalidArgument("invalid preallocation mode '" + std::string(name) +
                                 "' (off, metadata, falloc, full)");
}

}  // namespace qcrash::engine
