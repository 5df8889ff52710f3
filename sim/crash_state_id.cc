// Crash-state ids (crash_model.h, M10): formatting and a strict parser.
#include <charconv>

#include "sim/crash_model.h"

namespace qcrash::sim {
namespace {

// Reads a decimal number at *cursor; no sign, no leading '+', at most 19 digits.
bool ParseNumber(std::string_view text, size_t* cursor, uint64_t* value) {
  const char* begin = text.data() + *cursor;
  const char* end = text.data() + text.size();
  if (begin == end || *begin < '0' || *begin > '9') return false;
  if (*begin == '0' && begin + 1 != end && begin[1] >= '0' && begin[1] <= '9') {
    return false;  // a leading zero would break the id round trip
  }
  auto [ptr, error] = std::from_chars(begin, end, *value);
  if (error != std::errc()) return false;
  *cursor += static_cast<size_t>(ptr - begin);
  return true;
}

bool Expect(std::string_view text, size_t* cursor, char c) {
  if (*cursor >= text.size() || text[*cursor] != c) return false;
  ++*cursor;
  return true;
}

bool FitsU32(uint64_t value) { return value <= 0xffffffffULL; }

bool ParseChoice(std::string_view text, size_t* cursor, SectorChoice* choice) {
  if (!ParseNumber(text, cursor, &choice->sector) || !Expect(text, cursor, '=')) return false;
  if (Expect(text, cursor, 'g')) {
    choice->kind = ChoiceKind::kGarbage;
    return true;
  }
  uint64_t first = 0;
  if (!ParseNumber(text, cursor, &first) || !FitsU32(first)) return false;
  choice->version = static_cast<uint32_t>(first);
  if (!Expect(text, cursor, '/')) return true;
  uint64_t second = 0;
  uint64_t cut = 0;
  if (!ParseNumber(text, cursor, &second) || !Expect(text, cursor, '@') ||
      !ParseNumber(text, cursor, &cut) || !FitsU32(second) || !FitsU32(cut)) {
    return false;
  }
  choice->kind = ChoiceKind::kMix;
  choice->second_version = static_cast<uint32_t>(second);
  choice->cut_bytes = static_cast<uint32_t>(cut);
  return true;
}

}  // namespace

std::string FormatCrashStateId(const CrashState& state) {
  std::string id = "p" + std::to_string(state.point);
  char separator = ':';
  for (const SectorChoice& choice : state.deviations) {
    id += separator;
    separator = ',';
    id += std::to_string(choice.sector);
    id += '=';
    switch (choice.kind) {
      case ChoiceKind::kVersion:
        id += std::to_string(choice.version);
        break;
      case ChoiceKind::kMix:
        id += std::to_string(choice.version) + "/" + std::to_string(choice.second_version) + "@" +
              std::to_string(choice.cut_bytes);
        break;
      case ChoiceKind::kGarbage:
        id += 'g';
        break;
    }
  }
  return id;
}

Result<CrashState> ParseCrashStateId(std::string_view id) {
  CrashState state;
  size_t cursor = 0;
  auto bad = [&](const char* what) {
    return Status::InvalidArgument("crash-state id \"" + std::string(id) + "\" at character " +
                                   std::to_string(cursor) + ": " + what);
  };
  if (!Expect(id, &cursor, 'p')) return bad("expected 'p<point>'");
  if (!ParseNumber(id, &cursor, &state.point)) return bad("expected a point number");
  if (cursor == id.size()) return state;
  if (!Expect(id, &cursor, ':')) return bad("expected ':' after the point");
  while (true) {
    SectorChoice choice;
    if (!ParseChoice(id, &cursor, &choice)) return bad("expected <sector>=<version>");
    if (!state.deviations.empty() && choice.sector <= state.deviations.back().sector) {
      return bad("sectors must increase");
    }
    state.deviations.push_back(choice);
    if (cursor == id.size()) return state;
    if (!Expect(id, &cursor, ',')) return bad("expected ',' between sectors");
  }
}

}  // namespace qcrash::sim
