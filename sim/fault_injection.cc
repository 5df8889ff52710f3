// FaultInjector: rule matching for injected I/O errors.
#include "sim/fault_injection.h"

#include <string>

namespace qcrash::sim {
namespace {

const char* OpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "read";
    case IoOp::kWrite:
      return "write";
    case IoOp::kFlush:
      return "flush";
  }
  return "op";
}

}  // namespace

FaultInjector::FaultInjector(FaultRules rules) : no_space_after_bytes_(rules.no_space_after_bytes) {
  for (const ErrorRule& rule : rules.rules) AddRule(rule);
}

Status FaultInjector::Check(IoOp op, uint64_t offset_bytes, uint64_t length_bytes) {
  const uint64_t nth = ++counts_[static_cast<size_t>(op)];
  for (ActiveRule& active : rules_) {
    const ErrorRule& rule = active.rule;
    if (active.retired || rule.op != op) continue;
    const bool nth_matches =
        rule.nth_op == 0 || nth == rule.nth_op || (rule.sticky && nth > rule.nth_op);
    bool range_matches = rule.range_length_bytes == 0;
    if (!range_matches && op != IoOp::kFlush) {
      const uint64_t end = offset_bytes + length_bytes;
      const uint64_t rule_end = rule.range_offset_bytes + rule.range_length_bytes;
      range_matches = offset_bytes < rule_end && rule.range_offset_bytes < end;
    }
    if (!nth_matches || !range_matches) continue;
    if (!rule.sticky) active.retired = true;
    ++fired_;
    const std::string message = std::string("injected error on ") + OpName(op) + " #" +
                                std::to_string(nth) + " at " + HexOffset(offset_bytes) + " (" +
                                std::to_string(length_bytes) + " bytes)";
    return rule.code == StatusCode::kNoSpace ? Status::NoSpace(message) : Status::IoError(message);
  }
  return Status::Ok();
}

Status FaultInjector::CheckSpace(uint64_t end_bytes) const {
  if (no_space_after_bytes_ != 0 && end_bytes > no_space_after_bytes_) {
    return Status::NoSpace("write ending at " + HexOffset(end_bytes) +
                           " passes the space limit of " + std::to_string(no_space_after_bytes_) +
                           " bytes");
  }
  return Status::Ok();
}

}  // namespace qcrash::sim
