// Reference encodings from Hugging Face's `tokenizers` (its Rust library through the npm binding).
// Usage: node encode.mjs TOKENIZER_JSON CASES_JSON  (a JSON array of strings) -> a JSON array of id arrays on stdout.
import { readFileSync } from 'node:fs';
import tokenizers from 'tokenizers';

const [tokenizerPath, casesPath] = process.argv.slice(2);
const tokenizer = tokenizers.Tokenizer.fromFile(tokenizerPath);
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));
const ids = [];
for (const text of cases) ids.push((await tokenizer.encode(text)).getIds());
process.stdout.write(JSON.stringify(ids));
