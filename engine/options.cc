// Names of policies, preallocation modes and bug switches, as the CLI spells them.
#include "engine/options.h"

#include <string>

namespace qcrash::engine {

const char* PolicyName(OrderingPolicy policy) {
  switch (policy) {
    case OrderingPolicy::kWritethrough:
      return "writethrough";
    case OrderingPolicy::kOrdered:
      return "ordered";
    case OrderingPolicy::kLazy:
      return "lazy";
    case OrderingPolicy::kExtent:
      return "extent";
    case OrderingPolicy::kUnsafe:
      return "unsafe";
    case OrderingPolicy::kJournal:
      return "journal";
  }
  return "?";
}

Result<OrderingPolicy> ParsePolicy(std::string_view name) {
  for (OrderingPolicy p :
       {OrderingPolicy::kWritethrough, OrderingPolicy::kOrdered, OrderingPolicy::kLazy,
        OrderingPolicy::kExtent, OrderingPolicy::kUnsafe, OrderingPolicy::kJournal}) {
    if (name == PolicyName(p)) return p;
  }
  return Status::InvalidArgument("unknown policy '" + std::string(name) +
                                 "' (known: writethrough, ordered, lazy, extent, journal, unsafe)");
}

const char* PreallocationName(Preallocation preallocation) {
  switch (preallocation) {
    case Preallocation::kOff:
      return "off";
    case Preallocation::kMetadata:
      return "metadata";
    case Preallocation::kFalloc:
      return "falloc";
    case Preallocation::kFull:
      return "full";
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
