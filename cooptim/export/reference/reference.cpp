// cooptim's C++17 reference for exported accelerators: a small graph interpreter, one buffer per
// edge, that reads only the exported files and checks them against the test vectors.
//
//   g++ -std=c++17 -O2 -I EXPORT_DIR -o EXPORT_DIR/reference reference.cpp
//   EXPORT_DIR/reference EXPORT_DIR      # exit status 0: every node of every vector bit-exact
//
// params.h (the node and edge tables) and weights/weights.h (compiled in) give the graph;
// testbench/input.mem and testbench/<node>.mem (read at run time) give the input vectors and the
// expected outputs. The outputs it computes are written to EXPORT_DIR/testbench/reference_<node>.mem.
//
// The arithmetic of a conv / dense node, per output value (see the export folder's README.md):
//   acc = saturate(exact sum of x * w over the kept weights, acc_bits)   (0 where a dynamic gate is off)
//   acc = saturate(acc + bias[c], acc_bits);  acc = max(acc, 0) if relu
//   out = saturate(shift_round(acc, in_frac + weight_frac[c] - out_frac), out_bits)
// and of the other nodes: relu, relu6 (clip at 6 in the format), max / average pooling (the window
// sum shifted by log2(window)), global average pooling (the sum times round(2^16 / (H W)), shifted
// by 16), add (each input shifted to the output's format, summed, saturated), subsample (every
// stride-th pixel, zero channels appended), split and fused_relu (the input itself).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "params.h"
#include "weights/weights.h"

namespace {

using cooptim::NodeData;
using cooptim::NodeParams;
using cooptim::Op;
using Tensor = std::vector<int64_t>;  // one image's values, NHWC order (a dense layer: a vector)

int64_t saturate(int64_t v, int64_t bits) {
  const int64_t hi = (int64_t{1} << (bits - 1)) - 1;
  const int64_t lo = -(int64_t{1} << (bits - 1));
  return v < lo ? lo : (v > hi ? hi : v);
}

// v * 2^-shift rounded to an integer as the hardware does (shift >= 0; >> is arithmetic).
int64_t shift_round(int64_t v, int64_t shift) {
  if (shift <= 0) return v * (int64_t{1} << -shift);
  const int64_t floor = v >> shift;
  const int64_t rem = v & ((int64_t{1} << shift) - 1);
  const int64_t half = int64_t{1} << (shift - 1);
  switch (cooptim::kRounding) {
    case cooptim::Rounding::kFloor: return floor;
    case cooptim::Rounding::kHalfUp: return floor + (rem >= half ? 1 : 0);
    case cooptim::Rounding::kHalfEven: return floor + ((rem > half || (rem == half && (floor & 1))) ? 1 : 0);
  }
  return floor;
}

// The input window of output position (oy, ox) as a column in the weight rows' order: kernel taps
// outermost (row, then column), then the `channels` input channels from `first` (one group's);
// zero outside the image (padding).
std::vector<int64_t> window(const NodeParams& p, const Tensor& in, int64_t oy, int64_t ox, int64_t first,
                            int64_t channels) {
  std::vector<int64_t> col;
  col.reserve(p.kernel_h * p.kernel_w * channels);
  for (int64_t ky = 0; ky < p.kernel_h; ++ky) {
    for (int64_t kx = 0; kx < p.kernel_w; ++kx) {
      const int64_t y = oy * p.stride_h + ky - p.pad_top;
      const int64_t x = ox * p.stride_w + kx - p.pad_left;
      for (int64_t c = first; c < first + channels; ++c) {
        const bool inside = y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
        col.push_back(inside ? in[(y * p.in_w + x) * p.in_c + c] : 0);
      }
    }
  }
  return col;
}

// The exact dot product of a window with output channel c's kept weights, read in the layer's layout.
int64_t dot(const NodeParams& p, const NodeData& d, const std::vector<int64_t>& col, int64_t c,
            const std::vector<int64_t>& csp_offsets) {
  const int64_t rows = static_cast<int64_t>(col.size());
  int64_t sum = 0;
  switch (p.pattern) {
    case cooptim::Pattern::kNM:
    case cooptim::Pattern::kBalancedGroup: {
      // values/indices: (rows / M * N, out_c); entry r of a column is row (r / N) * M + index
      const int64_t stored = rows / p.m * p.n;
      for (int64_t r = 0; r < stored; ++r) {
        const int64_t row = (r / p.n) * p.m + d.indices[r * p.out_c + c];
        sum += col[row] * d.values[r * p.out_c + c];
      }
      return sum;
    }
    case cooptim::Pattern::kCSP: {
      // row k keeps its first lengths[k] chunks of `chunk` output channels, stored contiguously
      for (int64_t k = 0; k < rows; ++k) {
        if (c / p.chunk < d.lengths[k]) sum += col[k] * d.values[csp_offsets[k] + c];
      }
      return sum;
    }
    default:  // dense, unstructured (zeros stored), dynamic: (rows, out_c) row-major
      for (int64_t k = 0; k < rows; ++k) sum += col[k] * d.values[k * p.out_c + c];
      return sum;
  }
}

// A conv or dense node (a dense node is a 1 x 1 conv over its flattened input): input (in_h,
// in_w, in_c) -> output after ReLU and requantization. Output channel c of a grouped conv reads
// input channels [g * in_c / groups, (g + 1) * in_c / groups), g = c / (out_c / groups).
Tensor run_weighted(const NodeParams& p, const NodeData& d, const Tensor& in) {
  const int64_t rows = p.kernel_h * p.kernel_w * p.in_c / p.groups;
  std::vector<int64_t> csp_offsets;
  if (p.pattern == cooptim::Pattern::kCSP) {
    int64_t offset = 0;
    for (int64_t k = 0; k < rows; ++k) {
      csp_offsets.push_back(offset);
      offset += d.lengths[k] * p.chunk;
    }
  }
  // DPACS channel gates: from the input's spatial sums, known before any weight is read
  const int64_t gate_groups = p.channel_group > 0 ? p.out_c / p.channel_group : 1;
  std::vector<bool> channel_on(gate_groups, true);
  if (p.pattern == cooptim::Pattern::kDynamic && p.channel_gate) {
    std::vector<int64_t> sums(p.in_c, 0);
    for (int64_t i = 0; i < p.in_h * p.in_w; ++i)
      for (int64_t c = 0; c < p.in_c; ++c) sums[c] += in[i * p.in_c + c];
    for (int64_t g = 0; g < gate_groups; ++g) {
      int64_t logit = int64_t{d.channel_gate_bias[g]} * p.in_h * p.in_w;
      for (int64_t c = 0; c < p.in_c; ++c) logit += sums[c] * d.channel_gate[c * gate_groups + g];
      channel_on[g] = logit > 0;
    }
  }
  const int64_t group_in = p.in_c / p.groups, group_out = p.out_c / p.groups;
  Tensor out(p.out_h * p.out_w * p.out_c);
  for (int64_t oy = 0; oy < p.out_h; ++oy) {
    for (int64_t ox = 0; ox < p.out_w; ++ox) {
      for (int64_t g = 0; g < p.groups; ++g) {
        std::vector<int64_t> col = window(p, in, oy, ox, g * group_in, group_in);
        if (p.activation_threshold > 0)  // HASS: inputs of magnitude at most the threshold are zeroed
          for (auto& v : col) v = (v > p.activation_threshold || -v > p.activation_threshold) ? v : 0;
        bool position_on = true;
        if (p.pattern == cooptim::Pattern::kDynamic && p.spatial_gate) {
          int64_t logit = p.spatial_gate_bias;
          for (size_t k = 0; k < col.size(); ++k) logit += col[k] * d.spatial_gate[k];
          position_on = logit > 0;
        }
        for (int64_t c = g * group_out; c < (g + 1) * group_out; ++c) {
          const bool active =
              position_on && (p.pattern != cooptim::Pattern::kDynamic || channel_on[c / p.channel_group]);
          int64_t acc = active ? saturate(dot(p, d, col, c, csp_offsets), p.acc_bits) : 0;
          acc = saturate(acc + d.bias[c], p.acc_bits);
          if (p.relu && acc < 0) acc = 0;
          const int64_t shift = p.in_frac + d.weight_frac[c] - p.out_frac;
          out[(oy * p.out_w + ox) * p.out_c + c] = saturate(shift_round(acc, shift), p.out_bits);
        }
      }
    }
  }
  return out;
}

// Max or average pooling over kernel_h x kernel_w windows (max: padding at the format's minimum;
// average: zero padding, the window sum shifted right by log2(window)).
Tensor run_pool(const NodeParams& p, const Tensor& in) {
  const bool is_max = p.op == Op::kMaxPool;
  int64_t shift = 0;
  while ((int64_t{1} << shift) < p.kernel_h * p.kernel_w) ++shift;  // windows of 2^shift values
  const int64_t lowest = -(int64_t{1} << (p.out_bits - 1));
  Tensor out(p.out_h * p.out_w * p.out_c);
  for (int64_t oy = 0; oy < p.out_h; ++oy) {
    for (int64_t ox = 0; ox < p.out_w; ++ox) {
      for (int64_t c = 0; c < p.out_c; ++c) {
        int64_t sum = 0, best = INT64_MIN;
        for (int64_t ky = 0; ky < p.kernel_h; ++ky) {
          for (int64_t kx = 0; kx < p.kernel_w; ++kx) {
            const int64_t y = oy * p.stride_h + ky - p.pad_top, x = ox * p.stride_w + kx - p.pad_left;
            const bool inside = y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
            const int64_t v = inside ? in[(y * p.in_w + x) * p.in_c + c] : (is_max ? lowest : 0);
            sum += v;
            best = v > best ? v : best;
          }
        }
        out[(oy * p.out_w + ox) * p.out_c + c] = is_max ? best : shift_round(sum, shift);
      }
    }
  }
  return out;
}

constexpr int64_t kGlobalPoolShift = 16;  // bits of global pooling's fixed-point reciprocal of H x W

// One node: its input tensors (one per input edge, in port order) and formats -> its output.
Tensor run_node(const NodeParams& p, const NodeData& d, const std::vector<const Tensor*>& in,
                const std::vector<int64_t>& in_fracs) {
  const Tensor& x = *in[0];
  switch (p.op) {
    case Op::kConv:
    case Op::kDense:
      return run_weighted(p, d, x);
    case Op::kSplit:
    case Op::kFusedRelu:  // the ReLU was applied to the producer's accumulator
      return x;
    case Op::kRelu: {
      Tensor out(x);
      for (auto& v : out) v = v < 0 ? 0 : v;
      return out;
    }
    case Op::kRelu6: {
      const int64_t six = std::min(p.out_frac >= 0 ? int64_t{6} << p.out_frac : int64_t{6} >> -p.out_frac,
                                   (int64_t{1} << (p.out_bits - 1)) - 1);
      Tensor out(x);
      for (auto& v : out) v = v < 0 ? 0 : (v > six ? six : v);
      return out;
    }
    case Op::kMaxPool:
    case Op::kAvgPool:
      return run_pool(p, x);
    case Op::kGlobalPool: {
      const int64_t pixels = p.in_h * p.in_w;
      const int64_t reciprocal = ((int64_t{1} << (kGlobalPoolShift + 1)) / pixels + 1) / 2;  // round(2^16 / HW)
      Tensor out(p.in_c, 0);
      for (int64_t c = 0; c < p.in_c; ++c) {
        int64_t sum = 0;
        for (int64_t i = 0; i < pixels; ++i) sum += x[i * p.in_c + c];
        out[c] = shift_round(sum * reciprocal, kGlobalPoolShift);
      }
      return out;
    }
    case Op::kAdd: {
      Tensor out(x.size(), 0);
      for (size_t port = 0; port < in.size(); ++port)
        for (size_t i = 0; i < out.size(); ++i) out[i] += shift_round((*in[port])[i], in_fracs[port] - p.out_frac);
      for (auto& v : out) v = saturate(v, p.out_bits);
      return out;
    }
    case Op::kSubsample: {
      Tensor out(p.out_h * p.out_w * p.out_c, 0);
      for (int64_t oy = 0; oy < p.out_h; ++oy)
        for (int64_t ox = 0; ox < p.out_w; ++ox)
          for (int64_t c = 0; c < p.in_c; ++c)
            out[(oy * p.out_w + ox) * p.out_c + c] = x[((oy * p.stride_h) * p.in_w + ox * p.stride_w) * p.in_c + c];
      return out;
    }
  }
  std::cerr << "error: node " << p.name << " has an op this reference does not know\n";
  std::exit(2);
}

// A .mem file: one two's-complement hex word of `bits` bits per line.
std::vector<int64_t> read_mem(const std::string& path, int bits) {
  std::ifstream file(path);
  if (!file) {
    std::cerr << "error: cannot read " << path << "\n";
    std::exit(2);
  }
  std::vector<int64_t> values;
  std::string line;
  while (std::getline(file, line)) {
    if (line.empty()) continue;
    int64_t v = static_cast<int64_t>(std::stoull(line, nullptr, 16));
    if (v >= (int64_t{1} << (bits - 1))) v -= int64_t{1} << bits;
    values.push_back(v);
  }
  return values;
}

void write_mem(const std::string& path, const std::vector<int64_t>& values, int bits) {
  std::ofstream file(path);
  const uint64_t mask = bits == 64 ? ~uint64_t{0} : ((uint64_t{1} << bits) - 1);
  char buffer[32];
  for (int64_t v : values) {
    std::snprintf(buffer, sizeof buffer, "%0*llx\n", bits / 4, static_cast<unsigned long long>(v & mask));
    file << buffer;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " EXPORT_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  const int64_t input_size = int64_t{cooptim::kInputH} * cooptim::kInputW * cooptim::kInputC;
  const std::vector<int64_t> inputs = read_mem(dir + "/testbench/input.mem", 8);
  if (inputs.empty() || inputs.size() % input_size) {
    std::cerr << "error: testbench/input.mem holds " << inputs.size() << " values, not a multiple of "
              << input_size << "\n";
    return 2;
  }
  const int64_t vectors = static_cast<int64_t>(inputs.size()) / input_size;
  std::vector<std::vector<int64_t>> produced(cooptim::kNumNodes);
  for (int64_t v = 0; v < vectors; ++v) {
    // one buffer per edge: a node's output is written to every edge leaving it
    std::vector<Tensor> buffers(cooptim::kNumEdges);
    const Tensor image(inputs.begin() + v * input_size, inputs.begin() + (v + 1) * input_size);
    for (int e = 0; e < cooptim::kNumEdges; ++e)
      if (cooptim::kEdges[e].from < 0) buffers[e] = image;
    for (int i = 0; i < cooptim::kNumNodes; ++i) {
      std::vector<const Tensor*> in;
      std::vector<int64_t> fracs;
      for (int port = 0;; ++port) {  // the edges into node i, in port order
        int found = -1;
        for (int e = 0; e < cooptim::kNumEdges; ++e)
          if (cooptim::kEdges[e].to == i && cooptim::kEdges[e].port == port) found = e;
        if (found < 0) break;
        in.push_back(&buffers[found]);
        fracs.push_back(cooptim::kEdges[found].frac);
      }
      const Tensor out = run_node(cooptim::kNodes[i], cooptim::kNodeData[i], in, fracs);
      for (int e = 0; e < cooptim::kNumEdges; ++e)
        if (cooptim::kEdges[e].from == i) buffers[e] = out;
      produced[i].insert(produced[i].end(), out.begin(), out.end());
    }
  }
  int mismatched = 0;
  for (int i = 0; i < cooptim::kNumNodes; ++i) {
    const NodeParams& p = cooptim::kNodes[i];
    const int bits = p.out_bits <= 8 ? 8 : 32;
    const std::string name = p.name;
    write_mem(dir + "/testbench/reference_" + name + ".mem", produced[i], bits);
    const std::vector<int64_t> expected = read_mem(dir + "/testbench/" + name + ".mem", bits);
    int64_t wrong = 0;
    for (size_t j = 0; j < produced[i].size(); ++j) wrong += j >= expected.size() || expected[j] != produced[i][j];
    if (expected.size() != produced[i].size() || wrong) {
      ++mismatched;
      std::cout << name << ": MISMATCH in " << wrong << " of " << produced[i].size() << " values ("
                << expected.size() << " expected)\n";
    } else {
      std::cout << name << ": " << produced[i].size() << " values bit-exact\n";
    }
  }
  std::cout << (mismatched ? "FAIL" : "PASS") << ": " << vectors << " vectors, " << cooptim::kNumNodes
            << " nodes, " << cooptim::kNumEdges << " edges\n";
  return mismatched ? 1 : 0;
}
