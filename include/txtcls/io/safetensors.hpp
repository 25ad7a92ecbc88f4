#pragma once
// The safetensors file format, read and written by our own code.
//
// Layout: an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// and then the tensor bytes (little-endian, row-major), offsets counted from the end of the header.
//
// Reading is strict: a file is either accepted whole or refused with a txtcls::Error whose
// message starts with the file name and says what is wrong. Besides well-formed JSON this means
// known dtypes, integral non-negative shapes, offsets that match the shape, and a data region
// that the tensors cover exactly (no overlaps, gaps or trailing bytes). Accepted tensors come
// back in file order, the order of their bytes in the data region.
//
// Writing produces deterministic bytes (tensors in the given order, header padded with spaces
// so that the data starts 8-byte aligned) and replaces the target atomically.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "txtcls/io/atomic_file.hpp"
#include "txtcls/io/half.hpp"
#include "txtcls/io/quoting.hpp"
#include "txtcls/tensor.hpp"

namespace txtcls::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O copies little-endian file bytes straight into tensors: the host must be little-endian");

// Limits shared with the reference implementation (header size) or far above real use (rank).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
inline constexpr size_t kSafetensorsMaxRank = 64;

// A tensor as stored: dtype tag, shape and its little-endian row-major bytes.
struct RawTensor {
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const { return numel_of(shape); }
};

struct TensorFile {
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, RawTensor>> tensors;  // file order

  const RawTensor* find(const std::string& name) const {
    for (const auto& [n, t] : tensors)
      if (n == name) return &t;
    return nullptr;
  }
};

inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL})
    if (dtype_name(d) == s) return d;
  return std::nullopt;
}

namespace detail {

// One tensor entry of a header.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<HeaderEntry> entries;  // sorted by data offset
};

// Byte count of a tensor, or nullopt when the shape overflows. Besides the element count, the
// product of all non-zero dims must fit in int64: contiguous strides are computed from it even
// when some dim is 0.
inline std::optional<uint64_t> tensor_nbytes(const Shape& shape, DType dtype) {
  int64_t strides_product = 1;
  bool has_zero = false;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) has_zero = true;
    if (__builtin_mul_overflow(strides_product, std::max<int64_t>(d, 1), &strides_product)) return std::nullopt;
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(has_zero ? uint64_t{0} : static_cast<uint64_t>(strides_product),
                             static_cast<uint64_t>(dtype_size(dtype)), &bytes))
    return std::nullopt;
  return bytes;
}

inline std::string offsets_str(uint64_t b, uint64_t e) {
  // Appended, not "[" + ...: g++ 12 warns falsely (-Wrestrict) on the latter where it is inlined.
  std::string s = "[";
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  s += "]";
  return s;
}

// Streams the header JSON into entries. The schema is fixed and shallow, so a SAX handler can
// check it while parsing: no document tree is built (an adversarial header cannot make us
// allocate one) and duplicate keys, which a tree would silently merge, are seen.
class HeaderSax final : public nlohmann::json_sax<nlohmann::json> {
 public:
  using json = nlohmann::json;

  std::string error;  // set when a callback returned false
  std::map<std::string, std::string> metadata;
  std::vector<HeaderEntry> entries;  // header order

  bool null() override { return wrong_type("null"); }
  bool boolean(bool) override { return wrong_type("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v >= 0) return number_unsigned(static_cast<number_unsigned_t>(v));  // "-0"
    return wrong_type("a negative number", std::to_string(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (where_ != Where::Shape && where_ != Where::Offsets) return wrong_type("a number");
    auto& e = entries.back();
    if (where_ == Where::Offsets) {
      if (offsets_.size() == 2) return fail("tensor ", io::quoted(e.name), ": data_offsets must be [begin, end], found more than 2 entries");
      offsets_.push_back(v);
      return true;
    }
    if (e.shape.size() == kSafetensorsMaxRank)
      return fail("tensor ", io::quoted(e.name), ": shape has more than ", kSafetensorsMaxRank, " dimensions");
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return fail("tensor ", io::quoted(e.name), ": shape entry ", e.shape.size(), " is ", v, ", too large");
    e.shape.push_back(static_cast<int64_t>(v));
    return true;
  }
  bool number_float(number_float_t, const string_t& text) override { return wrong_type("a non-integer number", text); }
  bool binary(binary_t&) override { return wrong_type("binary data"); }

  bool string(string_t& s) override {
    if (where_ == Where::Metadata) {
      metadata[key_] = s;
      return true;
    }
    if (where_ == Where::Tensor && key_ == "dtype") {
      auto d = dtype_from_name(s);
      if (!d)
        return fail("tensor ", io::quoted(entries.back().name), ": unknown dtype ", io::quoted(s),
                    " (known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
      entries.back().dtype = *d;
      return true;
    }
    return wrong_type("a string", io::quoted(s));
  }

  bool start_object(std::size_t) override {
    switch (where_) {
      case Where::Top: where_ = Where::Root; return true;
      case Where::Root:
        if (key_ == "__metadata__") {
          where_ = Where::Metadata;
        } else {
          where_ = Where::Tensor;
          entries.push_back({});
          entries.back().name = key_;
          fields_.clear();
        }
        return true;
      default: return wrong_type("an object");
    }
  }

  bool key(string_t& k) override {
    switch (where_) {
      case Where::Root:
        if (!root_keys_.insert(k).second)
          return fail(k == "__metadata__" ? std::string("__metadata__ appears twice")
                                          : "duplicate tensor name " + io::quoted(k));
        break;
      case Where::Metadata:
        if (metadata.count(k)) return fail("__metadata__: duplicate key ", io::quoted(k));
        break;
      case Where::Tensor:
        if (k != "dtype" && k != "shape" && k != "data_offsets")
          return fail("tensor ", io::quoted(entries.back().name), ": unknown field ", io::quoted(k),
                      " (expected dtype, shape, data_offsets)");
        if (!fields_.insert(k).second) return fail("tensor ", io::quoted(entries.back().name), ": duplicate field ", io::quoted(k));
        break;
      default: return fail("unexpected key ", io::quoted(k));  // unreachable: keys occur only in objects
    }
    key_ = k;
    return true;
  }

  bool end_object() override {
    switch (where_) {
      case Where::Root: where_ = Where::Done; return true;
      case Where::Metadata: where_ = Where::Root; return true;
      case Where::Tensor:
        for (const char* f : {"dtype", "shape", "data_offsets"})
          if (!fields_.count(f)) return fail("tensor ", io::quoted(entries.back().name), ": missing field '", f, "'");
        where_ = Where::Root;
        return true;
      default: return fail("unbalanced object");  // unreachable: the parser balances brackets
    }
  }

  bool start_array(std::size_t) override {
    if (where_ == Where::Tensor && key_ == "shape") {
      where_ = Where::Shape;
      return true;
    }
    if (where_ == Where::Tensor && key_ == "data_offsets") {
      where_ = Where::Offsets;
      offsets_.clear();
      return true;
    }
    return wrong_type("an array");
  }

  bool end_array() override {
    if (where_ == Where::Offsets) {
      auto& e = entries.back();
      if (offsets_.size() != 2)
        return fail("tensor ", io::quoted(e.name), ": data_offsets must be [begin, end], found ", offsets_.size(), " entries");
      e.begin = offsets_[0];
      e.end = offsets_[1];
    }
    where_ = Where::Tensor;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    // Drop the library's "[json.exception.parse_error.101] " tag; keep its position and reason.
    std::string_view what = ex.what();
    if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string_view::npos)
      what.remove_prefix(p + 2);
    error = "header is not valid JSON: " + std::string(what);
    return false;
  }

 private:
  enum class Where { Top, Root, Metadata, Tensor, Shape, Offsets, Done };

  template <class... Args>
  bool fail(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    error = os.str();
    return false;
  }

  // A value of the wrong JSON type for its position; the message says what was expected.
  bool wrong_type(const char* found, const std::string& text = "") {
    const std::string got = text.empty() ? std::string(found) : std::string(found) + " " + text;
    switch (where_) {
      case Where::Top: return fail("header must be a JSON object, found ", got);
      case Where::Root:
        if (key_ == "__metadata__") return fail("__metadata__ must be an object of strings, found ", got);
        return fail("tensor ", io::quoted(key_), ": entry must be an object with dtype, shape and data_offsets, found ", got);
      case Where::Metadata: return fail("__metadata__: value of ", io::quoted(key_), " must be a string, found ", got);
      case Where::Tensor: {
        const auto& n = entries.back().name;
        if (key_ == "dtype") return fail("tensor ", io::quoted(n), ": dtype must be a string, found ", got);
        return fail("tensor ", io::quoted(n), ": ", key_, " must be an array of non-negative integers, found ", got);
      }
      case Where::Shape:
        return fail("tensor ", io::quoted(entries.back().name), ": shape entry ", entries.back().shape.size(), " is ", got,
                    ", must be a non-negative integer");
      case Where::Offsets:
        return fail("tensor ", io::quoted(entries.back().name), ": data_offsets entry ", offsets_.size(), " is ", got,
                    ", must be a non-negative integer");
      case Where::Done: break;
    }
    return fail("unexpected ", got, " after the header object");  // unreachable: strict parsing stops first
  }

  Where where_ = Where::Top;
  std::string key_;
  std::set<std::string> root_keys_, fields_;
  std::vector<uint64_t> offsets_;
};

// Checks each entry's offsets against its shape and the data size, and that the entries tile
// the data region exactly. Returns the entries sorted by offset (header order among equals).
inline std::vector<HeaderEntry> check_layout(std::vector<HeaderEntry> entries, uint64_t data_size,
                                             const std::string& src) {
  for (const auto& e : entries) {
    const auto nbytes = tensor_nbytes(e.shape, e.dtype);
    TXTCLS_CHECK(nbytes, src, ": tensor ", io::quoted(e.name), ": shape ", shape_str(e.shape),
                 " is too large (its size overflows 64 bits)");
    TXTCLS_CHECK(e.begin <= e.end, src, ": tensor ", io::quoted(e.name), ": data_offsets ", offsets_str(e.begin, e.end),
                 " end before they begin");
    TXTCLS_CHECK(e.end - e.begin == *nbytes, src, ": tensor ", io::quoted(e.name), ": data_offsets ",
                 offsets_str(e.begin, e.end), " do not match shape ", shape_str(e.shape), " of ", dtype_name(e.dtype),
                 " (", *nbytes, " bytes)");
    TXTCLS_CHECK(e.end <= data_size, src, ": tensor ", io::quoted(e.name), ": data_offsets ", offsets_str(e.begin, e.end),
                 " extend past the end of the data (", data_size, " bytes; truncated file?)");
  }
  std::stable_sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    if (e.begin < covered) {
      const auto& p = entries[i - 1];
      txtcls::detail::fail(src, ": tensors ", io::quoted(p.name), " ", offsets_str(p.begin, p.end), " and ", io::quoted(e.name), " ",
                   offsets_str(e.begin, e.end), " overlap");
    }
    TXTCLS_CHECK(e.begin == covered, src, ": data bytes [", covered, ", ", e.begin,
                 ") are not covered by any tensor (gap before tensor ", io::quoted(e.name), ")");
    covered = e.end;
  }
  TXTCLS_CHECK(covered == data_size, src, ": ", data_size - covered, " trailing bytes after the last tensor (data bytes [",
               covered, ", ", data_size, ") are not covered by any tensor)");
  return entries;
}

inline uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The header length must be plausible before anything is allocated for it.
inline void check_header_length(uint64_t n, uint64_t file_size, const std::string& src) {
  TXTCLS_CHECK(file_size >= 8, src, ": file is too small (", file_size,
               " bytes) to be safetensors: it must start with an 8-byte header length");
  TXTCLS_CHECK(n >= 2, src, ": header length ", n, " is too small (the smallest header, '{}', has 2 bytes)");
  TXTCLS_CHECK(n <= kSafetensorsMaxHeaderBytes, src, ": header length ", n, " exceeds the limit of ",
               kSafetensorsMaxHeaderBytes, " bytes (corrupt length?)");
  TXTCLS_CHECK(n <= file_size - 8, src, ": header length ", n, " exceeds the ", file_size - 8,
               " bytes that follow it (truncated file?)");
}

inline Header parse_header(const uint8_t* p, uint64_t n, uint64_t data_size, const std::string& src) {
  const std::string_view text(reinterpret_cast<const char*>(p), n);
  const size_t bad = io::utf8_invalid_at(text);
  TXTCLS_CHECK(bad == std::string_view::npos, src, ": header is not valid UTF-8 (byte ", bad, " of the header)");
  // The JSON parser takes a NUL byte for the end of its input and would ignore what follows.
  const size_t nul = text.find('\0');
  TXTCLS_CHECK(nul == std::string_view::npos, src, ": header contains a NUL byte (byte ", nul, " of the header)");
  // A JSON parser would also skip a byte order mark or leading blanks; the format does not allow them.
  TXTCLS_CHECK(text[0] == '{', src, ": header must be a JSON object starting with '{', found ",
               io::quoted(text.substr(0, std::min<size_t>(text.size(), 16))), "...");
  HeaderSax sax;
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &sax);
  if (!ok) txtcls::detail::fail(src, ": ", sax.error.empty() ? std::string("header is not valid JSON") : sax.error);
  return {std::move(sax.metadata), check_layout(std::move(sax.entries), data_size, src)};
}

// BOOL bytes other than 0 and 1 have no meaning (and loading them as bool is undefined).
// `what` starts the message ("file: tensor 'name'").
inline void check_bool_bytes(const std::vector<uint8_t>& b, const std::string& what) {
  for (size_t i = 0; i < b.size(); ++i)
    TXTCLS_CHECK(b[i] <= 1, what, ": BOOL element ", i, " has byte value ", int(b[i]), " (must be 0 or 1)");
}

// What a RawTensor must satisfy to be written or converted.
inline void check_raw(const RawTensor& t, const std::string& what) {
  for (int64_t d : t.shape) TXTCLS_CHECK(d >= 0, what, ": negative size in shape ", shape_str(t.shape));
  const auto nbytes = tensor_nbytes(t.shape, t.dtype);
  TXTCLS_CHECK(nbytes, what, ": shape ", shape_str(t.shape), " is too large");
  TXTCLS_CHECK(t.bytes.size() == *nbytes, what, ": holds ", t.bytes.size(), " bytes, but shape ", shape_str(t.shape),
               " of ", dtype_name(t.dtype), " needs ", *nbytes);
  if (t.dtype == DType::BOOL) check_bool_bytes(t.bytes, what);
}

template <class F>
auto rethrow_out_of_memory(const std::string& src, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    txtcls::detail::fail(src, ": out of memory while reading");
  }
}

}  // namespace detail

// Parses a whole safetensors file held in memory; source_name starts every error message.
inline TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& source_name) {
  return detail::rethrow_out_of_memory(source_name, [&] {
    const uint64_t n = size >= 8 ? detail::read_u64_le(data) : 0;
    detail::check_header_length(n, size, source_name);
    const uint64_t data_size = size - 8 - n;
    detail::Header h = detail::parse_header(data + 8, n, data_size, source_name);
    const uint8_t* base = data + 8 + n;
    TensorFile f;
    f.metadata = std::move(h.metadata);
    f.tensors.reserve(h.entries.size());
    for (auto& e : h.entries) {
      RawTensor t{e.dtype, std::move(e.shape), std::vector<uint8_t>(base + e.begin, base + e.end)};
      if (t.dtype == DType::BOOL) detail::check_bool_bytes(t.bytes, source_name + ": tensor " + io::quoted(e.name));
      f.tensors.emplace_back(std::move(e.name), std::move(t));
    }
    return f;
  });
}

// Reads a safetensors file: header first, then each tensor straight into its own buffer.
inline TensorFile read_safetensors(const std::string& path) {
  return detail::rethrow_out_of_memory(path, [&] {
    InputFile in(path);
    const uint64_t size = in.size();
    uint8_t prefix[8] = {};
    if (size >= 8) in.read_exact(prefix, 8, "the header length");
    const uint64_t n = detail::read_u64_le(prefix);
    detail::check_header_length(n, size, path);
    std::vector<uint8_t> header(static_cast<size_t>(n));
    in.read_exact(header.data(), header.size(), "the header");
    detail::Header h = detail::parse_header(header.data(), n, size - 8 - n, path);
    TensorFile f;
    f.metadata = std::move(h.metadata);
    f.tensors.reserve(h.entries.size());
    // The entries tile the data region in order, so reading them one after another is sequential.
    for (auto& e : h.entries) {
      RawTensor t{e.dtype, std::move(e.shape), std::vector<uint8_t>(static_cast<size_t>(e.end - e.begin))};
      const std::string what = "tensor " + io::quoted(e.name);
      in.read_exact(t.bytes.data(), t.bytes.size(), what.c_str());
      if (t.dtype == DType::BOOL) detail::check_bool_bytes(t.bytes, path + ": " + what);
      f.tensors.emplace_back(std::move(e.name), std::move(t));
    }
    return f;
  });
}

namespace detail {

// The header text, padded with spaces so that the data starts at a multiple of 8 bytes.
inline std::string build_header(const TensorFile& f, const std::string& dst) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  for (const auto& [k, v] : f.metadata) {
    TXTCLS_CHECK(io::utf8_invalid_at(k) == std::string_view::npos && io::utf8_invalid_at(v) == std::string_view::npos, dst,
                 ": __metadata__ entry ", io::quoted(k), " is not valid UTF-8");
    h["__metadata__"][k] = v;
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : f.tensors) {
    TXTCLS_CHECK(name != "__metadata__", dst, ": '__metadata__' is reserved and cannot name a tensor");
    TXTCLS_CHECK(io::utf8_invalid_at(name) == std::string_view::npos, dst, ": tensor name ", io::quoted(name),
                 " is not valid UTF-8");
    TXTCLS_CHECK(names.insert(name).second, dst, ": duplicate tensor name ", io::quoted(name));
    check_raw(t, dst + ": tensor " + io::quoted(name));
    auto& e = h[name];
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.bytes.size()};
    offset += t.bytes.size();
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  TXTCLS_CHECK(text.size() <= kSafetensorsMaxHeaderBytes, dst, ": header of ", text.size(),
               " bytes exceeds the format's limit of ", kSafetensorsMaxHeaderBytes);
  return text;
}

}  // namespace detail

// The bytes of a safetensors file; name_for_errors starts every error message.
inline std::vector<uint8_t> serialize_safetensors(const TensorFile& f, const std::string& name_for_errors = "safetensors") {
  const std::string header = detail::build_header(f, name_for_errors);
  size_t total = 8 + header.size();
  for (const auto& [name, t] : f.tensors) total += t.bytes.size();
  std::vector<uint8_t> out(total);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  size_t at = 8 + header.size();
  for (const auto& [name, t] : f.tensors) {
    if (!t.bytes.empty()) std::memcpy(out.data() + at, t.bytes.data(), t.bytes.size());
    at += t.bytes.size();
  }
  return out;
}

// Writes atomically: a reader (or a crash) sees the previous file or the complete new one.
inline void write_safetensors(const std::string& path, const TensorFile& f) {
  const std::string header = detail::build_header(f, path);  // validate before touching the disk
  AtomicFile out(path);
  const uint64_t n = header.size();
  out.write(&n, 8);
  out.write(header.data(), header.size());
  for (const auto& [name, t] : f.tensors)
    if (!t.bytes.empty()) out.write(t.bytes.data(), t.bytes.size());
  out.commit();
}

// ---------------------------------------------------------------- RawTensor <-> Tensor<T>

namespace detail {

template <class S>
S load_le(const uint8_t* p) {
  S v;
  std::memcpy(&v, p, sizeof(S));
  return v;
}

// Calls f(i, value) for every element of a raw tensor of a floating-point dtype, widened to double.
template <class F>
bool for_each_as_double(const RawTensor& r, F&& f) {
  const uint8_t* p = r.bytes.data();
  const int64_t n = r.numel();
  switch (r.dtype) {
    case DType::F64: for (int64_t i = 0; i < n; ++i) f(i, load_le<double>(p + 8 * i)); return true;
    case DType::F32: for (int64_t i = 0; i < n; ++i) f(i, double(load_le<float>(p + 4 * i))); return true;
    case DType::F16: for (int64_t i = 0; i < n; ++i) f(i, half::f16_to_double(load_le<uint16_t>(p + 2 * i))); return true;
    case DType::BF16: for (int64_t i = 0; i < n; ++i) f(i, half::bf16_to_double(load_le<uint16_t>(p + 2 * i))); return true;
    default: return false;
  }
}

// Same for integer dtypes (and BOOL), widened to int64.
template <class F>
bool for_each_as_int64(const RawTensor& r, F&& f) {
  const uint8_t* p = r.bytes.data();
  const int64_t n = r.numel();
  switch (r.dtype) {
    case DType::I64: for (int64_t i = 0; i < n; ++i) f(i, load_le<int64_t>(p + 8 * i)); return true;
    case DType::I32: for (int64_t i = 0; i < n; ++i) f(i, int64_t(load_le<int32_t>(p + 4 * i))); return true;
    case DType::I16: for (int64_t i = 0; i < n; ++i) f(i, int64_t(load_le<int16_t>(p + 2 * i))); return true;
    case DType::I8: for (int64_t i = 0; i < n; ++i) f(i, int64_t(load_le<int8_t>(p + i))); return true;
    case DType::U8:
    case DType::BOOL: for (int64_t i = 0; i < n; ++i) f(i, int64_t(p[i])); return true;
    default: return false;
  }
}

template <class S>
void store_le(std::vector<uint8_t>& bytes, int64_t i, S v) {
  std::memcpy(bytes.data() + static_cast<size_t>(i) * sizeof(S), &v, sizeof(S));
}

template <class T>
Tensor<T> cpu_contiguous(const Tensor<T>& t) {
  TXTCLS_CHECK(t.defined(), "to_raw: the tensor is undefined");
  // detach(): serialising must not add nodes to an autograd graph.
  return t.detach().cpu().contiguous();
}

}  // namespace detail

// In the conversions below, name_for_errors starts every error message as it is, so pass what
// locates the tensor for the user, e.g. path + ": tensor 'fc.weight'" (or just the name).

// The tensor with its stored dtype, which must be T's (F32 for float, I64 for int64_t, ...).
template <class T>
Tensor<T> to_tensor(const RawTensor& raw, const std::string& name_for_errors) {
  TXTCLS_CHECK(raw.dtype == dtype_of<T>, name_for_errors, ": stored as ", dtype_name(raw.dtype), ", but ",
               dtype_name(dtype_of<T>), " was requested (to_tensor_converting widens or narrows)");
  detail::check_raw(raw, name_for_errors);
  Tensor<T> out(raw.shape);
  if (!raw.bytes.empty()) std::memcpy(static_cast<void*>(out.data()), raw.bytes.data(), raw.bytes.size());
  return out;
}

// Floating T (float, double) accepts F64, F32, F16 and BF16 (F64 -> float rounds to nearest);
// int64_t accepts every integer dtype and BOOL. Other pairs are refused, naming both dtypes.
template <class T>
Tensor<T> to_tensor_converting(const RawTensor& raw, const std::string& name_for_errors) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>,
                "to_tensor_converting: T must be float, double or int64_t");
  detail::check_raw(raw, name_for_errors);
  Tensor<T> out(raw.shape);
  T* o = out.data();
  bool ok;
  if constexpr (std::is_floating_point_v<T>)
    ok = detail::for_each_as_double(raw, [o](int64_t i, double v) { o[i] = static_cast<T>(v); });
  else
    ok = detail::for_each_as_int64(raw, [o](int64_t i, int64_t v) { o[i] = v; });
  TXTCLS_CHECK(ok, name_for_errors, ": cannot convert ", dtype_name(raw.dtype), " to ",
               dtype_name(dtype_of<T>), std::is_floating_point_v<T> ? " (only F64, F32, F16 and BF16 convert to floating point)"
                                                                    : " (only integer dtypes and BOOL convert to I64)");
  return out;
}

// The tensor's values in row-major order with its own dtype (views are written contiguously).
template <class T>
RawTensor to_raw(const Tensor<T>& t) {
  Tensor<T> c = detail::cpu_contiguous(t);
  RawTensor r{dtype_of<T>, c.shape(), std::vector<uint8_t>(static_cast<size_t>(c.numel()) * sizeof(T))};
  if (!r.bytes.empty()) std::memcpy(r.bytes.data(), static_cast<const void*>(c.data()), r.bytes.size());
  return r;
}

// Stores a floating tensor as F64, F32, F16 or BF16 (rounding to nearest, ties to even), or an
// int64 tensor as any integer dtype or BOOL (values must fit, else an error names the first misfit).
template <class T>
RawTensor to_raw_converting(const Tensor<T>& t, DType dtype, const std::string& name_for_errors = "to_raw_converting") {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>,
                "to_raw_converting: T must be float, double or int64_t");
  Tensor<T> c = detail::cpu_contiguous(t);
  const T* p = c.data();
  const int64_t n = c.numel();
  RawTensor r{dtype, c.shape(), std::vector<uint8_t>(static_cast<size_t>(n) * dtype_size(dtype))};
  auto& b = r.bytes;
  auto refuse = [&] {
    txtcls::detail::fail(name_for_errors, ": cannot store ", dtype_name(dtype_of<T>), " as ", dtype_name(dtype));
  };
  if constexpr (std::is_floating_point_v<T>) {
    switch (dtype) {
      case DType::F64: for (int64_t i = 0; i < n; ++i) detail::store_le(b, i, static_cast<double>(p[i])); break;
      case DType::F32: for (int64_t i = 0; i < n; ++i) detail::store_le(b, i, static_cast<float>(p[i])); break;
      case DType::F16: for (int64_t i = 0; i < n; ++i) detail::store_le(b, i, half::double_to_f16(p[i])); break;
      case DType::BF16: for (int64_t i = 0; i < n; ++i) detail::store_le(b, i, half::double_to_bf16(p[i])); break;
      default: refuse();
    }
  } else {
    auto store = [&](auto tag, int64_t lo, int64_t hi) {
      using S = decltype(tag);
      for (int64_t i = 0; i < n; ++i) {
        TXTCLS_CHECK(p[i] >= lo && p[i] <= hi, name_for_errors, ": element ", i, " = ", p[i],
                     " does not fit in ", dtype_name(dtype));
        detail::store_le(b, i, static_cast<S>(p[i]));
      }
    };
    switch (dtype) {
      case DType::I64: store(int64_t{}, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()); break;
      case DType::I32: store(int32_t{}, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()); break;
      case DType::I16: store(int16_t{}, std::numeric_limits<int16_t>::min(), std::numeric_limits<int16_t>::max()); break;
      case DType::I8: store(int8_t{}, std::numeric_limits<int8_t>::min(), std::numeric_limits<int8_t>::max()); break;
      case DType::U8: store(uint8_t{}, 0, 255); break;
      case DType::BOOL: store(uint8_t{}, 0, 1); break;
      default: refuse();
    }
  }
  return r;
}

// ---------------------------------------------------------------- whole files of one element type

template <class T>
void save_tensors(const std::string& path, const std::map<std::string, Tensor<T>>& tensors,
                  const std::map<std::string, std::string>& metadata = {}) {
  TensorFile f;
  f.metadata = metadata;
  for (const auto& [name, t] : tensors) f.tensors.emplace_back(name, to_raw(t));
  write_safetensors(path, f);
}

// Every tensor must be stored with T's dtype.
template <class T>
std::map<std::string, Tensor<T>> load_tensors(const std::string& path) {
  TensorFile f = read_safetensors(path);
  std::map<std::string, Tensor<T>> out;
  for (const auto& [name, raw] : f.tensors) out.emplace(name, to_tensor<T>(raw, path + ": tensor " + io::quoted(name)));
  return out;
}

}  // namespace txtcls::io
