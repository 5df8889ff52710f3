// How qemu-img map sees holes in the host files under an image: QEMU asks
// the host file about a data range (SEEK_DATA / SEEK_HOLE) for raw files
// always, and for qcow2 files only when it detects metadata preallocation.
#pragma once

#include <vector>

#include "cli/cli_common.h"
#include "engine/image.h"

namespace qcrash::cli {

// qcow2_detect_metadata_preallocation: at least max(10/9, +2) times as many
// clusters have a refcount as the file has allocated blocks for.
bool DetectsMetadataPreallocation(const std::string& qcow2_path);

// Splits data extents of the files QEMU would ask into data and hole runs;
// a hole reads as zeroes, so it is marked "zero" (a raw file's hole also
// loses "data", a qcow2 cluster keeps it), as qemu-img map does.
std::vector<engine::MapExtent> SplitHostHoles(const std::vector<ChainFile>& chain,
                                              const std::vector<engine::MapExtent>& extents);

}  // namespace qcrash::cli
