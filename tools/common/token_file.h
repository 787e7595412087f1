// Reading a prompt's token ids from a file, as tierkvctl inspect / evict take them.
//
// Two forms are accepted:
//   - unsigned integers separated by whitespace, commas or newlines ("1 2 3", "1,2,3", one per
//   line)
//   - a JSON array of unsigned integers ("[1, 2, 3]"), as a tokenizer's output is often saved.
// Errors name the line and the offending text: "line 3: 'abc' is not a token id".
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/status.h"

namespace tierkv::tools {

Result<std::vector<TokenId>> parse_token_ids(std::string_view text);
// Reads `path` and parses it; errors are prefixed with the path.
Result<std::vector<TokenId>> read_token_file(const std::string& path);

}  // namespace tierkv::tools
