// skein serve's HTTP API driven by the official `openai` npm package, as users' code drives it.
// SKEIN_HTTP: the server's base URL (".../v1"); the server runs the tiny byte-level v5.2 model with
// auth token "t0k" (run.sh starts it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.SKEIN_HTTP, apiKey: 't0k', maxRetries: 0 });
const greedy = { model: 'tiny', temperature: 0 };

test('completions, plain and streamed, give the documented greedy text', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The man said', max_tokens: 20 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, ' to a state of the s');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 20);

  const stream = await client.completions.create({ ...greedy, prompt: 'The man said', max_tokens: 20, stream: true });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, ' to a state of the s');
  assert.equal(finish, 'length');
});

test('chat completions, plain and streamed, agree', async () => {
  const messages = [{ role: 'user', content: 'Hello' }];
  const r = await client.chat.completions.create({ ...greedy, messages, max_tokens: 24 });
  assert.equal(r.choices[0].message.role, 'assistant');
  const content = r.choices[0].message.content;
  assert.ok(content.length > 0);

  const stream = await client.chat.completions.create({ ...greedy, messages, max_tokens: 24, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, content);
  assert.equal(usage.completion_tokens, 24);
});

test('n choices come back indexed, plain and streamed, each its own sample', async () => {
  const messages = [{ role: 'user', content: 'Hello' }];
  const ask = { model: 'tiny', messages, max_tokens: 12, temperature: 1, seed: 3, n: 3 };
  const r = await client.chat.completions.create(ask);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(new Set(r.choices.map((c) => c.message.content)).size, 3);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 3 * 12);

  const stream = await client.chat.completions.create({ ...ask, stream: true });
  const text = ['', '', ''];
  for await (const chunk of stream) for (const c of chunk.choices) text[c.index] += c.delta?.content ?? '';
  assert.deepEqual(text, r.choices.map((c) => c.message.content));
});

test('logprobs come back in the package\'s shapes', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The man said', max_tokens: 10, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  assert.equal(lp.token_logprobs.length, 10);
  assert.ok(lp.token_logprobs.every((x) => x <= 0));
  assert.ok(lp.top_logprobs.every((top, i) => top[lp.tokens[i]] === lp.token_logprobs[i]));  // greedy: the likeliest

  const c = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8,
    logprobs: true, top_logprobs: 3 });
  const content = c.choices[0].logprobs.content;
  assert.equal(content.length, c.usage.completion_tokens);
  assert.ok(content.every((t) => t.top_logprobs.length === 3 && t.top_logprobs[0].token === t.token && t.bytes.length > 0));
});

test('echo with logprobs scores the prompt, as lm-evaluation-harness asks', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The man said', max_tokens: 1, logprobs: 1, echo: true });
  const lp = r.choices[0].logprobs;
  assert.ok(r.choices[0].text.startsWith('The man said'));
  assert.equal(lp.tokens.length, 'The man said'.length + 1);
  assert.equal(lp.token_logprobs[0], null);
  assert.ok(lp.token_logprobs.slice(1).every((x) => x < 0));
});

test('logit_bias steers the choice as the package sends it', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The man said', max_tokens: 4, logit_bias: { '65': 100 } });
  assert.equal(r.choices[0].text, 'AAAA');
  const c = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3,
    logit_bias: { '66': 100 } });
  assert.equal(c.choices[0].message.content, 'BBB');
});

test('JSON mode replies are JSON object text, plain and streamed; json_schema as the package sends it', async () => {
  const ask = { ...greedy, messages: [{ role: 'user', content: 'A goose, as JSON:' }], max_tokens: 30, response_format: { type: 'json_object' } };
  const r = await client.chat.completions.create(ask);
  const content = r.choices[0].message.content;
  assert.match(content, /^\s*\{/);  // the tiny model does not close its object within 30 tokens
  assert.equal(r.choices[0].finish_reason, 'length');
  let text = '';
  for await (const chunk of await client.chat.completions.create({ ...ask, stream: true })) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, content);
  const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false };
  const s = await client.chat.completions.create({ ...ask, response_format: { type: 'json_schema', json_schema: { name: 'goose', strict: true, schema } } });
  assert.match(s.choices[0].message.content, /^\s*\{\s*"name"\s*:\s*"/);  // the schema's first property comes first
  const shaped = { ...schema, properties: { name: { type: 'string', pattern: '^G[a-z]+$' }, age: { type: 'integer', minimum: 1, maximum: 9 } } };
  const g = await client.chat.completions.create({ ...ask, response_format: { type: 'json_schema', json_schema: { name: 'goose', strict: true, schema: shaped } } });
  assert.match(g.choices[0].message.content, /^\s*\{\s*"name"\s*:\s*"G[a-z]*("\s*,\s*"age"\s*:\s*[1-9]?)?/);  // within 30 tokens: a prefix of one
  const unsupported = { ...schema, properties: { ...schema.properties, age: { type: 'integer', not: { const: 2 } } } };
  await assert.rejects(client.chat.completions.create({ ...ask, response_format: { type: 'json_schema', json_schema: { name: 'goose', schema: unsupported } } }),
    (e) => e instanceof OpenAI.BadRequestError && /schema\/properties\/age: 'not' is not supported/.test(e.message));
});

test('tool calls come back as the package reads them: plain, streamed, and round trips through runTools', async () => {
  const parameters = { type: 'object', properties: { city: { type: 'string', enum: ['Oslo', 'Paris'] } }, required: ['city'], additionalProperties: false };
  const ask = { ...greedy, messages: [{ role: 'user', content: 'Weather in Oslo?' }], max_tokens: 160,
    tools: [{ type: 'function', function: { name: 'get_weather', parameters } }], tool_choice: { type: 'function', function: { name: 'get_weather' } } };
  const r = await client.chat.completions.create(ask);
  assert.equal(r.choices[0].finish_reason, 'stop');  // OpenAI ends a named call so
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  assert.ok(['Oslo', 'Paris'].includes(JSON.parse(call.function.arguments).city));
  const streamed = await client.chat.completions.stream(ask).finalMessage();  // the package assembles the deltas
  assert.deepEqual(streamed.tool_calls[0].function, call.function);
  // The package runs the function and sends its result back with the call, twice.
  const cities = [];
  const runner = client.chat.completions.runTools({ ...ask, tool_choice: 'required',
    tools: [{ type: 'function', function: { name: 'get_weather', parameters, parse: JSON.parse, function: ({ city }) => { cities.push(city); return `Rain in ${city}.`; } } }] },
    { maxChatCompletions: 2 });
  await runner.done();
  assert.equal(cities.length, 2);
  assert.deepEqual(runner.messages.map((m) => m.role), ['user', 'assistant', 'tool', 'assistant', 'tool']);
});

test('models are listed', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  assert.deepEqual(models, ['tiny-rwkv-5v2-730K']);
});

test('errors arrive as the package\'s error types', async () => {
  await assert.rejects(client.completions.create({ ...greedy, prompt: 'x', temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
  const wrong = new OpenAI({ baseURL: process.env.SKEIN_HTTP, apiKey: 'nope', maxRetries: 0 });
  await assert.rejects(wrong.completions.create({ ...greedy, prompt: 'x' }), (e) => e instanceof OpenAI.AuthenticationError);
});
