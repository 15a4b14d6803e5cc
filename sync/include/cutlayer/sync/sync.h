// transitional: client/ moves to the precise headers (options.h, flat_params.h,
// sparse_wire.h, snapshot.h), then this forwarding header goes.
#pragma once

#include "cutlayer/kernels/sparse_codec.h"  // what this header used to bring along
#include "cutlayer/sync/flat_params.h"
#include "cutlayer/sync/options.h"
#include "cutlayer/sync/snapshot.h"
#include "cutlayer/sync/sparse_wire.h"
