// txtcls inspect FILE [--json]: what a safetensors file holds. The file is read and validated
// completely, so a file that inspect lists is one that the library will load.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "txtcls/io/quoting.hpp"
#include "txtcls/io/safetensors.hpp"

namespace txtcls_cli {
namespace {

// Names and values as they are when printable, else escaped and quoted (never a raw newline).
std::string printable(const std::string& s) {
  std::string q = txtcls::io::quoted(s);
  return q.size() == s.size() + 2 && !s.empty() ? s : q;
}

// Columns are padded by code points, so non-ASCII names stay aligned.
size_t display_width(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string pad(const std::string& s, size_t width) { return s + std::string(width - std::min(width, display_width(s)), ' '); }

std::string human_bytes(uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = -1;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

struct Row {
  std::string name, dtype, shape;
  int64_t numel;
  uint64_t begin, end;
};

int run_inspect(const std::string& path, bool as_json) {
  const txtcls::io::TensorFile f = txtcls::io::read_safetensors(path);
  // Accepted files tile their data region in file order, so offsets are running sums.
  std::vector<Row> rows;
  uint64_t offset = 0;
  int64_t elements = 0;
  for (const auto& [name, t] : f.tensors) {
    rows.push_back({name, std::string(txtcls::dtype_name(t.dtype)), txtcls::shape_str(t.shape), t.numel(), offset,
                    offset + t.bytes.size()});
    offset += t.bytes.size();
    elements += t.numel();
  }
  const uint64_t file_size = std::filesystem::file_size(path);
  const uint64_t header_bytes = file_size - 8 - offset;

  if (as_json) {
    nlohmann::ordered_json j;
    j["file"] = path;
    j["file_bytes"] = file_size;
    j["header_bytes"] = header_bytes;
    j["data_bytes"] = offset;
    j["metadata"] = f.metadata;
    j["tensors"] = nlohmann::ordered_json::array();
    for (const auto& r : rows) {
      const auto& t = *f.find(r.name);
      j["tensors"].push_back({{"name", r.name},
                              {"dtype", r.dtype},
                              {"shape", t.shape},
                              {"numel", r.numel},
                              {"bytes", r.end - r.begin},
                              {"data_offsets", {r.begin, r.end}}});
    }
    // Paths need not be UTF-8; names and metadata already are (the reader checks).
    std::cout << j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
    return 0;
  }

  std::ostringstream os;
  os << printable(path) << ": " << rows.size() << (rows.size() == 1 ? " tensor, " : " tensors, ") << elements
     << " elements, " << human_bytes(offset) << " of data (header " << header_bytes << " bytes)\n";
  if (!rows.empty()) {
    size_t wn = 4, wd = 5, ws = 5, wb = 5;
    for (const auto& r : rows) {
      wn = std::max(wn, display_width(printable(r.name)));
      wd = std::max(wd, r.dtype.size());
      ws = std::max(ws, r.shape.size());
      wb = std::max(wb, std::to_string(r.end - r.begin).size());
    }
    os << '\n' << pad("name", wn) << "  " << pad("dtype", wd) << "  " << pad("shape", ws) << "  " << std::string(wb - 5, ' ')
       << "bytes\n";
    for (const auto& r : rows) {
      const std::string b = std::to_string(r.end - r.begin);
      os << pad(printable(r.name), wn) << "  " << pad(r.dtype, wd) << "  " << pad(r.shape, ws) << "  "
         << std::string(wb - b.size(), ' ') << b << '\n';
    }
  }
  if (!f.metadata.empty()) {
    size_t wk = 0;
    for (const auto& [k, v] : f.metadata) wk = std::max(wk, display_width(printable(k)));
    os << "\nmetadata:\n";
    for (const auto& [k, v] : f.metadata) os << "  " << pad(printable(k), wk) << "  " << printable(v) << '\n';
  }
  std::cout << os.str();
  return 0;
}

}  // namespace

Action setup_inspect(CLI::App& sub) {
  struct Options {
    std::string file;
    bool json = false;
  };
  auto opt = std::make_shared<Options>();
  sub.add_option("file", opt->file, "safetensors file")->required();
  sub.add_flag("--json", opt->json, "print a JSON object instead of a table");
  return [opt] { return run_inspect(opt->file, opt->json); };
}

}  // namespace txtcls_cli
