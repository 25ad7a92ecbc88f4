// UTF-8 validation and the quoting of file-provided names in one-line error messages.
#include <catch2/catch.hpp>

#include "txtcls/io/quoting.hpp"

using txtcls::io::quoted;
using txtcls::io::utf8_invalid_at;

TEST_CASE("utf8_invalid_at: finds the first byte outside well-formed UTF-8", "[io][utf8]") {
  constexpr size_t ok = std::string_view::npos;
  REQUIRE(utf8_invalid_at("") == ok);
  REQUIRE(utf8_invalid_at("plain ascii") == ok);
  REQUIRE(utf8_invalid_at("w\xc3\xb6rter \xe2\x9c\x93 \xf0\x9f\x98\x80") == ok);  // 2-, 3- and 4-byte forms
  REQUIRE(utf8_invalid_at("\xf4\x8f\xbf\xbf") == ok);                            // U+10FFFF, the last code point
  REQUIRE(utf8_invalid_at("ab\xff") == 2);
  REQUIRE(utf8_invalid_at("\x80") == 0);                // stray continuation byte
  REQUIRE(utf8_invalid_at("a\xc3") == 1);               // truncated sequence
  REQUIRE(utf8_invalid_at("\xe2\x9c") == 0);
  REQUIRE(utf8_invalid_at("\xc3\x28") == 0);            // bad continuation
  REQUIRE(utf8_invalid_at("\xc0\xaf") == 0);            // overlong '/'
  REQUIRE(utf8_invalid_at("\xe0\x80\xaf") == 0);        // overlong, 3 bytes
  REQUIRE(utf8_invalid_at("\xf0\x80\x80\xaf") == 0);    // overlong, 4 bytes
  REQUIRE(utf8_invalid_at("x\xed\xa0\x80") == 1);       // surrogate U+D800
  REQUIRE(utf8_invalid_at("\xf4\x90\x80\x80") == 0);    // above U+10FFFF
  REQUIRE(utf8_invalid_at("\xf5\x80\x80\x80") == 0);
}

TEST_CASE("quoted: names become safe for a one-line message", "[io][utf8]") {
  REQUIRE(quoted("fc.weight") == "'fc.weight'");
  REQUIRE(quoted("") == "''");
  REQUIRE(quoted("emb.w\xc3\xb6rter") == "'emb.w\xc3\xb6rter'");
  REQUIRE(quoted("a\nb\r\tc") == "'a\\nb\\r\\tc'");
  REQUIRE(quoted("it's a \\") == "'it\\'s a \\\\'");
  REQUIRE(quoted(std::string_view("\x01\x7f\0", 3)) == "'\\x01\\x7f\\x00'");
  REQUIRE(quoted("bad\xff\xc3") == "'bad\\xff\\xc3'");
  REQUIRE(quoted("\xe2\x9c") == "'\\xe2\\x9c'");  // a cut sequence is escaped byte by byte
}
