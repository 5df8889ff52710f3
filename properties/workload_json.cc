// Workload <-> JSON, with one clear error per malformed field.
#include <fstream>
#include <sstream>

#include "engine/compression.h"
#include "properties/json.h"

namespace qcrash::properties {

using nlohmann::json;

json WorkloadToJson(const Workload& w) {
  json ops = json::array();
  for (const GuestOp& op : w.ops) {
    json o = {{"op", OpKindName(op.kind)}};
    if (op.kind == OpKind::kResize) {
      o["size"] = op.length_bytes;
    } else if (op.kind == OpKind::kRebase) {
      o["backing"] = RebaseTarget(op);
    } else if (IsBitmapOp(op.kind)) {
      o["bitmap"] = op.offset_bytes;
      if (op.kind == OpKind::kBitmapAdd && op.length_bytes != 0) o["granularity"] = op.length_bytes;
    } else if (op.kind == OpKind::kAmend) {
      if (op.amend.version != 0) o["compat"] = op.amend.version == 2 ? "0.10" : "1.1";
      if (op.amend.refcount_bits != 0) o["refcount_bits"] = op.amend.refcount_bits;
      if (op.amend.lazy_refcounts) o["lazy_refcounts"] = *op.amend.lazy_refcounts;
    } else if (op.kind == OpKind::kCommit) {
      if (op.keep) o["keep"] = true;
    } else if (op.kind != OpKind::kFlush && op.kind != OpKind::kClose) {
      o["offset"] = op.offset_bytes;
      o["length"] = op.length_bytes;
      if (op.kind == OpKind::kWriteZeroes) o["unmap"] = op.may_unmap;
    }
    ops.push_back(o);
  }
  json j = {{"name", w.name},
            {"image",
             {{"size", w.image.size_bytes},
              {"cluster_size", uint64_t{1} << w.image.cluster_bits},
              {"compat", w.image.version == 2 ? "0.10" : "1.1"},
              {"refcount_bits", 1u << w.image.refcount_order},
              {"preallocation", engine::PreallocationName(w.image.preallocation)},
              {"lazy_refcounts", w.image.lazy_refcounts}}},
            {"check_reservations", w.check_reservations},
            {"backing", w.backing},
            {"ops", ops}};
  // Only non-default image features are written, so other workloads keep
  // their JSON.
  if (w.image.extended_l2) j["image"]["extended_l2"] = true;
  if (w.image.compression_type != engine::CompressionType::kZlib) {
    j["image"]["compression_type"] =
        engine::CompressionTypeName(static_cast<uint8_t>(w.image.compression_type));
  }
  if (!w.image.data_file.empty()) j["data_file"] = w.image.data_file_raw ? "raw" : "on";
  return j;
}

namespace {

Result<uint64_t> Field(const json& object, const char* name, const std::string& where) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number_unsigned()) {
    return Status::InvalidArgument(where + ": field '" + name + "' must be a non-negative integer");
  }
  return it->get<uint64_t>();
}

int Log2Exact(uint64_t value) {
  if (value == 0 || (value & (value - 1))) return -1;
  int bits = 0;
  while ((uint64_t{1} << bits) < value) ++bits;
  return bits;
}

Status ImageFromJson(const json& image, engine::CreateOptions& out) {
  if (!image.is_object()) return Status::InvalidArgument("workload: 'image' must be an object");
  QCRASH_ASSIGN_OR_RETURN(out.size_bytes, Field(image, "size", "workload image"));
  if (image.contains("cluster_size")) {
    QCRASH_ASSIGN_OR_RETURN(uint64_t cluster, Field(image, "cluster_size", "workload image"));
    const int bits = Log2Exact(cluster);
    if (bits < 9 || bits > 21)
      return Status::InvalidArgument(
          "workload image: cluster_size must be a power of two in 512..2M");
    out.cluster_bits = static_cast<uint32_t>(bits);
  }
  if (image.contains("refcount_bits")) {
    QCRASH_ASSIGN_OR_RETURN(uint64_t width, Field(image, "refcount_bits", "workload image"));
    const int order = Log2Exact(width);
    if (order < 0 || order > 6)
      return Status::InvalidArgument("workload image: refcount_bits must be 1, 2, 4, ..., 64");
    out.refcount_order = static_cast<uint32_t>(order);
  }
  const std::string compat = image.value("compat", "1.1");
  if (compat != "0.10" && compat != "1.1")
    return Status::InvalidArgument("workload image: compat must be 0.10 or 1.1");
  out.version = compat == "0.10" ? 2 : 3;
  QCRASH_ASSIGN_OR_RETURN(out.preallocation,
                          engine::ParsePreallocation(image.value("preallocation", "off")));
  out.lazy_refcounts = image.value("lazy_refcounts", false);
  out.extended_l2 = image.value("extended_l2", false);
  if (out.extended_l2 && (out.version < 3 || out.cluster_bits < 14))
    return Status::InvalidArgument(
        "workload image: extended_l2 needs compat 1.1 and a cluster_size of 16 KiB or more");
  QCRASH_ASSIGN_OR_RETURN(out.compression_type,
                          engine::ParseCompressionType(image.value("compression_type", "zlib")));
  if (out.version == 2 && out.compression_type != engine::CompressionType::kZlib)
    return Status::InvalidArgument("workload image: compression_type zstd needs compat 1.1");
  return Status::Ok();
}

}  // namespace

namespace {

Result<Workload> DecodeWorkload(const json& j) {
  if (!j.is_object()) return Status::InvalidArgument("workload: the document must be an object");
  Workload w;
  w.name = j.value("name", "unnamed");
  if (!j.contains("image")) return Status::InvalidArgument("workload: missing 'image'");
  QCRASH_RETURN_IF_ERROR(ImageFromJson(j["image"], w.image));
  w.check_reservations = j.value("check_reservations", false);
  if (j.value("backing", false)) SetBacking(w);
  const std::string data_file = j.value("data_file", "off");
  if (data_file != "off" && data_file != "on" && data_file != "raw") {
    return Status::InvalidArgument("workload: 'data_file' must be \"off\", \"on\" or \"raw\"");
  }
  if (data_file != "off") SetDataFile(w, data_file == "raw");
  if (!j.contains("ops") || !j["ops"].is_array())
    return Status::InvalidArgument("workload: 'ops' must be an array");
  for (size_t i = 0; i < j["ops"].size(); ++i) {
    const json& o = j["ops"][i];
    const std::string where = "workload ops[" + std::to_string(i) + "]";
    if (!o.is_object() || !o.contains("op") || !o["op"].is_string()) {
      return Status::InvalidArgument(where + ": must be an object with a string 'op'");
    }
    GuestOp op;
    QCRASH_ASSIGN_OR_RETURN(op.kind, ParseOpKind(o["op"].get<std::string>()));
    if (op.kind != OpKind::kCommit && o.contains("keep"))
      return Status::InvalidArgument(where + ": only a commit takes 'keep'");
    if (op.kind == OpKind::kResize) {
      QCRASH_ASSIGN_OR_RETURN(op.length_bytes, Field(o, "size", where));
    } else if (op.kind == OpKind::kRebase) {
      if (!o.contains("backing") || !o["backing"].is_string())
        return Status::InvalidArgument(where + ": field 'backing' must be a string");
      const std::string name = o["backing"].get<std::string>();
      if (name != "" && name != kBackingFileName && name != kBacking2FileName) {
        return Status::InvalidArgument(where + ": field 'backing' must be \"\", \"" +
                                       kBackingFileName + "\" or \"" + kBacking2FileName + "\"");
      }
      op.offset_bytes = name.empty() ? 0 : name == kBackingFileName ? 1 : 2;
    } else if (IsBitmapOp(op.kind)) {
      QCRASH_ASSIGN_OR_RETURN(op.offset_bytes, Field(o, "bitmap", where));
      if (op.kind == OpKind::kBitmapAdd && o.contains("granularity")) {
        QCRASH_ASSIGN_OR_RETURN(op.length_bytes, Field(o, "granularity", where));
      }
    } else if (op.kind == OpKind::kAmend) {
      if (o.contains("compat")) {
        const json& compat = o["compat"];
        if (!compat.is_string() || (compat != "0.10" && compat != "1.1")) {
          return Status::InvalidArgument(where + ": field 'compat' must be \"0.10\" or \"1.1\"");
        }
        op.amend.version = compat == "0.10" ? 2 : 3;
      }
      if (o.contains("refcount_bits")) {
        QCRASH_ASSIGN_OR_RETURN(const uint64_t bits, Field(o, "refcount_bits", where));
        if (bits == 0 || bits > 64) {
          return Status::InvalidArgument(where +
                                         ": field 'refcount_bits' must be 1, 2, 4, ..., 64");
        }
        op.amend.refcount_bits = static_cast<uint32_t>(bits);
      }
      if (o.contains("lazy_refcounts")) {
        if (!o["lazy_refcounts"].is_boolean()) {
          return Status::InvalidArgument(where + ": field 'lazy_refcounts' must be true or false");
        }
        op.amend.lazy_refcounts = o["lazy_refcounts"].get<bool>();
      }
    } else if (op.kind == OpKind::kCommit) {
      if (o.contains("keep") && !o["keep"].is_boolean())
        return Status::InvalidArgument(where + ": field 'keep' must be true or false");
      op.keep = o.value("keep", false);
    } else if (op.kind != OpKind::kFlush && op.kind != OpKind::kClose) {
      QCRASH_ASSIGN_OR_RETURN(op.offset_bytes, Field(o, "offset", where));
      QCRASH_ASSIGN_OR_RETURN(op.length_bytes, Field(o, "length", where));
      op.may_unmap = o.value("unmap", false);
    }
    w.ops.push_back(op);
  }
  QCRASH_RETURN_IF_ERROR(ValidateWorkload(w));
  return w;
}

}  // namespace

Result<Workload> WorkloadFromJson(const json& j) {
  try {
    return DecodeWorkload(j);
  } catch (const json::exception& e) {
    // A field of the wrong type ("name": 5): nlohmann's own words, one line.
    return Status::InvalidArgument(std::string("workload: a field has the wrong type (") +
                                   e.what() + ")");
  }
}

Result<Workload> LoadWorkloadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::IoError("cannot open workload file");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("not valid JSON");
  return WorkloadFromJson(j);
}

}  // namespace qcrash::properties
