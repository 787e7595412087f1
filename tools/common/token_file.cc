#include "common/token_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace tierkv::tools {

namespace {

bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '\f' || c == '\v';
}

// What the reader shows of a bad token: the run of text up to the next separator, shortened so
// a binary file does not flood the terminal.
std::string excerpt(std::string_view word) {
  constexpr size_t kMax = 40;
  std::string s(word.substr(0, kMax));
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  }
  if (word.size() > kMax) s += "...";
  return s;
}

}  // namespace

Result<std::vector<TokenId>> parse_token_ids(std::string_view text) {
  std::vector<TokenId> out;
  size_t line = 1;
  size_t i = 0;
  const auto skip_separators = [&] {
    while (i < text.size() && is_separator(text[i])) {
      if (text[i] == '\n') ++line;
      ++i;
    }
  };

  skip_separators();
  const bool json = i < text.size() && text[i] == '[';
  if (json) ++i;
  bool closed = false;
  while (true) {
    skip_separators();
    if (i == text.size()) break;
    if (json && text[i] == ']') {
      closed = true;
      ++i;
      skip_separators();
      if (i != text.size()) {
        size_t end = i;
        while (end < text.size() && !is_separator(text[end])) ++end;
        return Status::InvalidArgument("line " + std::to_string(line) + ": unexpected '" +
                                       excerpt(text.substr(i, end - i)) +
                                       "' after the closing ']'");
      }
      break;
    }
    size_t end = i;
    while (end < text.size() && !is_separator(text[end]) && !(json && text[end] == ']')) ++end;
    const std::string_view word = text.substr(i, end - i);
    uint64_t v = 0;
    bool numeric = true;
    for (const char c : word) {
      if (c < '0' || c > '9') {
        numeric = false;
        break;
      }
      v = v * 10 + static_cast<uint64_t>(c - '0');
      if (v > std::numeric_limits<TokenId>::max()) {
        return Status::InvalidArgument("line " + std::to_string(line) + ": '" + excerpt(word) +
                                       "' is out of range for a token id (at most " +
                                       std::to_string(std::numeric_limits<TokenId>::max()) + ")");
      }
    }
    if (!numeric) {
      return Status::InvalidArgument("line " + std::to_string(line) + ": '" + excerpt(word) +
                                     "' is not a token id");
    }
    out.push_back(static_cast<TokenId>(v));
    i = end;
  }
  if (json && !closed) {
    return Status::InvalidArgument("line " + std::to_string(line) +
                                   ": the JSON array is not closed with ']'");
  }
  return out;
}

Result<std::vector<TokenId>> read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(path, errno);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::FromErrno(path, errno);
  auto tokens = parse_token_ids(buf.str());
  if (!tokens.ok()) return Status(tokens.status().code(), path + ": " + tokens.status().message());
  if (tokens->empty()) return Status::InvalidArgument(path + ": no token ids in the file");
  return tokens;
}

}  // namespace tierkv::tools
