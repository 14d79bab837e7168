// GPT-OSS chat end to end on the CPU reference engine: the gpt_oss family fixture (test/fixtures/families)
// given GPT-OSS's real tokenizer (o200k_harmony, built from tiktoken's ranks: test/helpers/o200k-harmony.ts)
// and its published chat template (test/data/gpt-oss/chat_template.jinja, read from chat_template.jinja
// as the checkpoint ships it). Its embedding and lm_head rows are tiled to o200k's 201088 ids so every
// prompt id is a real row. The model's weights are random, so the parser is checked on what it writes
// (the result equals parseHarmony of its tokens), and on scripted harmony replies: the real forward runs
// every step and only the sampled token is replaced by the script's.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { memoryModel, type ModelSource } from '../../src/loader/model-source';
import { writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors';
import { parseHarmony } from '../../src/engine/harmony';
import type { WebMoeEngine } from '../../src/engine/engine';
import type { ChatMessage } from '../../src/engine/text';
import type { GenerationChunk, GenerationResult } from '../../src/engine/types';
import { cpuEngine } from '../helpers/models';
import { createRemoteEngine } from '../../src/engine/remote';
import { familyCheckpoint, familyDir } from '../helpers/families';
import { O200K_HARMONY_VOCAB_SIZE, gptOssChatTemplate, gptOssTokenizerConfig, o200kHarmonyTokenizerJson } from '../helpers/o200k-harmony';

const today = () => {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
};
const SYSTEM = (effort: string, tools = false) =>
  `<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: ${today()}\n\nReasoning: ${effort}\n\n` +
  `# Valid channels: analysis, commentary, final. Channel must be included for every message.${tools ? "\nCalls to these tools must go to the commentary channel: 'functions'." : ''}<|end|>`;

/** The tools of openai/harmony's documentation example. */
const TOOLS = [
  { type: 'function' as const, function: { name: 'get_location', description: 'Gets the location of the user.', parameters: { type: 'object', properties: {} } } },
  {
    type: 'function' as const,
    function: {
      name: 'get_current_weather', description: 'Gets the current weather in the provided location.',
      parameters: {
        type: 'object',
        properties: {
          location: { type: 'string', description: 'The city and state, e.g. San Francisco, CA' },
          format: { type: 'string', enum: ['celsius', 'fahrenheit'], default: 'celsius' },
        },
        required: ['location'],
      },
    },
  },
];

/** The gpt_oss fixture with o200k_harmony's tokenizer files (embedding and lm_head rows tiled to 201088). */
async function gptOssChatModel(): Promise<ModelSource> {
  const ck = await familyCheckpoint('gpt_oss');
  const config = JSON.parse(readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8'));
  const V = config.vocab_size as number;
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of ck.tensors.keys()) {
    const r = await ck.readRaw(name);
    if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') {
      const [rows, cols] = r.shape;
      expect(rows).toBe(V);
      const src = new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength);
      const rowBytes = src.byteLength / rows;
      const out = new Uint8Array(rowBytes * O200K_HARMONY_VOCAB_SIZE);
      for (let i = 0; i < O200K_HARMONY_VOCAB_SIZE; i++) out.set(src.subarray((i % rows) * rowBytes, (i % rows + 1) * rowBytes), i * rowBytes);
      tensors[name] = { dtype: r.dtype, shape: [O200K_HARMONY_VOCAB_SIZE, cols], data: out };
    } else tensors[name] = { dtype: r.dtype, shape: r.shape, data: r.data.slice() };
  }
  await ck.close();
  return memoryModel({
    // As published: eos 200002 (<|return|>), pad 199999; generation_config.json adds the other ends.
    'config.json': JSON.stringify({ ...config, vocab_size: O200K_HARMONY_VOCAB_SIZE, eos_token_id: 200002, pad_token_id: 199999 }),
    'generation_config.json': JSON.stringify({ bos_token_id: 199998, do_sample: true, eos_token_id: [200002, 199999, 200012], pad_token_id: 199999 }),
    'model.safetensors': writeSafetensors(tensors),
    'tokenizer.json': JSON.stringify(o200kHarmonyTokenizerJson()),
    'tokenizer_config.json': JSON.stringify(gptOssTokenizerConfig(false)),
    'chat_template.jinja': gptOssChatTemplate(),
  });
}

async function drain(it: AsyncGenerator<GenerationChunk, GenerationResult>): Promise<{ chunks: GenerationChunk[]; result: GenerationResult }> {
  const chunks: GenerationChunk[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) return { chunks, result: r.value };
    chunks.push(r.value);
  }
}

/**
 * Replaces the sampled token of each step by the script's (the real forward still runs on every token);
 * with several replies, each generation (step 0) takes the next one.
 */
function script(engine: WebMoeEngine, ...replies: string[]): () => void {
  const scripts = replies.map((t) => engine.codec.encode(t, false));
  let ids: number[] = [];
  const runner = engine.runner;
  const real = runner.step.bind(runner);
  runner.step = async (tokens, sampling, step, history, routing, opts) => {
    if (step === 0) ids = scripts.shift() ?? ids;
    const r = await real(tokens, sampling, step, history, routing, opts);
    return { ...r, token: ids[step] ?? r.token, extra: undefined };
  };
  return () => { runner.step = real; };
}

describe('GPT-OSS chat (harmony) on the gpt_oss fixture with o200k_harmony', () => {
  let engine: WebMoeEngine;
  beforeAll(async () => {
    engine = cpuEngine();
    const info = await engine.load(await gptOssChatModel());
    expect(info.chatTemplate).toBe(true);
  }, 120_000);

  it('the codec reads chat_template.jinja and knows the harmony tokens; no BOS is added', () => {
    expect(engine.codec.harmony).toMatchObject({ start: 200006, channel: 200005, message: 200008, end: 200007, return: 200002, call: 200012 });
    expect(engine.codec.addsBos).toBe(false);
  });

  it('renders system, developer and user messages with the reasoning level as the published template does', () => {
    const messages: ChatMessage[] = [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'What is 2+2?' }];
    expect(engine.codec.renderChat(messages, true, { reasoningEffort: 'high' })).toBe(
      SYSTEM('high') + '<|start|>developer<|message|># Instructions\n\nAnswer briefly.\n\n<|end|><|start|>user<|message|>What is 2+2?<|end|><|start|>assistant',
    );
    // Without a system message and options: no developer message, the template's default level (medium).
    expect(engine.codec.renderChat([{ role: 'user', content: 'Hi' }])).toBe(SYSTEM('medium') + '<|start|>user<|message|>Hi<|end|><|start|>assistant');
  });

  it('renders tools as the TypeScript-like namespace of openai/harmony’s documentation, and a tool call round trip', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'Use tools.' },
      { role: 'user', content: 'Weather in Tokyo?' },
      { role: 'assistant', content: '', thinking: 'Need the weather.', tool_calls: [{ type: 'function', function: { name: 'get_current_weather', arguments: { location: 'Tokyo' } } }] },
      { role: 'tool', content: '{"sunny": true}' },
    ];
    const got = engine.codec.renderChat(messages, true, { reasoningEffort: 'low', tools: TOOLS });
    expect(got).toBe(
      SYSTEM('low', true) +
      '<|start|>developer<|message|># Instructions\n\nUse tools.\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n' +
      '// Gets the location of the user.\ntype get_location = () => any;\n\n' +
      // This template revision writes ",\n" after every parameter (both branches of its `loop.last` test),
      // also after a default's comment, where openai/harmony's own renderer writes none.
      '// Gets the current weather in the provided location.\ntype get_current_weather = (_: {\n// The city and state, e.g. San Francisco, CA\nlocation: string,\nformat?: "celsius" | "fahrenheit", // default: celsius,\n}) => any;\n\n' +
      '} // namespace functions<|end|>' +
      '<|start|>user<|message|>Weather in Tokyo?<|end|>' +
      '<|start|>assistant<|channel|>analysis<|message|>Need the weather.<|end|>' +
      '<|start|>assistant to=functions.get_current_weather<|channel|>commentary json<|message|>{"location": "Tokyo"}<|call|>' +
      '<|start|>functions.get_current_weather to=assistant<|channel|>commentary<|message|>"{\\"sunny\\": true}"<|end|>' +
      '<|start|>assistant',
    );
  });

  it('a tool message without a tool call before it is an ArgumentError (the template’s raise_exception)', () => {
    expect(() => engine.codec.renderChat([{ role: 'user', content: 'x' }, { role: 'tool', content: 'y' }])).toThrow(/rejects this conversation.*no previous assistant message with a tool call/);
  });

  it('chat() renders harmony, generates on the fixture, and applies the parser to what the model wrote', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'Hello there' }];
    const { chunks, result } = await drain(engine.chat(messages, { maxTokens: 6, temperature: 0, reasoningEffort: 'low' }));
    const prompt = engine.codec.encodeChat(messages, { reasoningEffort: 'low' });
    expect(result.promptTokens).toBe(prompt.length);
    expect(prompt.slice(0, 3)).toEqual([200006, ...engine.codec.encode('system', false), 200008]);
    expect(prompt.slice(-2)).toEqual([200006, ...engine.codec.encode('assistant', false)]);
    const want = parseHarmony(result.tokens, engine.codec.harmony!, (ids, skip) => engine.codec.decode(ids, skip));
    expect(result.reasoning).toBe(want.reasoning);
    expect(result.text).toBe(want.content);
    expect(result.toolCalls).toEqual(want.toolCalls);
    expect(result.formatProblems).toEqual(want.problems);
    expect(chunks.map((c) => c.reasoning ?? '').join('')).toBe(result.reasoning);
  }, 60_000);

  it('a scripted reasoning + answer reply: reasoning chunks, answer text, ended at <|return|>', async () => {
    const restore = script(engine, '<|channel|>analysis<|message|>User says hi. Reply.<|end|><|start|>assistant<|channel|>final<|message|>Hi! 👋<|return|>');
    try {
      const { chunks, result } = await drain(engine.chat([{ role: 'user', content: 'hi' }], { maxTokens: 64, temperature: 0 }));
      expect(result).toMatchObject({ reasoning: 'User says hi. Reply.', text: 'Hi! 👋', toolCalls: [], formatProblems: [], finishReason: 'eos' });
      expect(chunks.map((c) => c.reasoning ?? '').join('')).toBe('User says hi. Reply.');
      expect(chunks.map((c) => c.text).join('')).toBe('Hi! 👋');
      expect(chunks.some((c) => c.reasoning && c.text)).toBe(false);
    } finally { restore(); }
  }, 60_000);

  it('a scripted tool call ends with finishReason tool_calls; the OpenAI API returns tool_calls and reasoning_content', async () => {
    const reply = '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>{"location":"Tokyo"}<|call|>';
    let restore = script(engine, reply);
    try {
      const { result } = await drain(engine.chat([{ role: 'user', content: 'Weather in Tokyo?' }], { maxTokens: 64, temperature: 0, tools: TOOLS }));
      expect(result.finishReason).toBe('tool_calls');
      expect(result.toolCalls).toEqual([{ name: 'get_current_weather', recipient: 'functions.get_current_weather', arguments: '{"location":"Tokyo"}', contentType: 'json' }]);
    } finally { restore(); }

    restore = script(engine, reply);
    try {
      const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Weather in Tokyo?' }], tools: TOOLS, reasoning_effort: 'low', max_tokens: 64, temperature: 0 });
      const c = r.choices[0];
      expect(c.finish_reason).toBe('tool_calls');
      expect(c.message.reasoning_content).toBe('Need weather.');
      expect(c.message.content).toBe('');
      expect(c.message.tool_calls).toEqual([{ id: expect.stringMatching(/^call-/), type: 'function', function: { name: 'get_current_weather', arguments: '{"location":"Tokyo"}' } }]);
    } finally { restore(); }

    restore = script(engine, reply);
    try {
      const s = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Weather in Tokyo?' }], tools: TOOLS, max_tokens: 64, temperature: 0, stream: true });
      let reasoning = '', content = '';
      const calls = [];
      let finish = null;
      for await (const ch of s) {
        const d = ch.choices[0]?.delta;
        reasoning += d?.reasoning_content ?? '';
        content += d?.content ?? '';
        calls.push(...(d?.tool_calls ?? []));
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      expect({ reasoning, content, finish }).toEqual({ reasoning: 'Need weather.', content: '', finish: 'tool_calls' });
      expect(calls).toEqual([{ index: 0, id: expect.stringMatching(/^call-/), type: 'function', function: { name: 'get_current_weather', arguments: '{"location":"Tokyo"}' } }]);
    } finally { restore(); }
  }, 120_000);

  it('the tool call goes back in through the OpenAI API (assistant tool_calls + tool message) and renders as harmony', async () => {
    const restore = script(engine, '<|channel|>final<|message|>Sunny in Tokyo.<|return|>');
    try {
      const r = await engine.chat.completions.create({
        messages: [
          { role: 'user', content: 'Weather in Tokyo?' },
          { role: 'assistant', content: null, reasoning_content: 'Need weather.', tool_calls: [{ id: 'call-1', type: 'function', function: { name: 'get_current_weather', arguments: '{"location":"Tokyo"}' } }] },
          { role: 'tool', tool_call_id: 'call-1', content: 'sunny' },
        ],
        tools: TOOLS, max_tokens: 64, temperature: 0,
      });
      expect(r.choices[0].message).toMatchObject({ content: 'Sunny in Tokyo.', reasoning_content: '' });
      expect(r.choices[0].finish_reason).toBe('stop');
    } finally { restore(); }
  }, 60_000);

  it('the remote engine reads reasoning_content and tool_calls from the stream this API sends, and forwards reasoning_effort and tools', async () => {
    const reply = '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>{"location":"Tokyo"}<|call|>';
    const restore = script(engine, reply);
    let sse = '';
    try {
      const s = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Weather?' }], tools: TOOLS, max_tokens: 64, temperature: 0, stream: true });
      for await (const ch of s) sse += `data: ${JSON.stringify(ch)}\n\n`;
      sse += 'data: [DONE]\n\n';
    } finally { restore(); }
    const sent: any[] = [];
    const fetch = (async (_url: string, init?: RequestInit) => {
      sent.push(JSON.parse(String(init?.body)));
      return new Response(sse, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
    }) as unknown as typeof globalThis.fetch;
    const remote = createRemoteEngine({ baseURL: 'http://server/v1', model: 'gpt-oss', fetch });
    const { chunks, result } = await drain(remote.chat([{ role: 'user', content: 'Weather?' }], { tools: TOOLS, reasoningEffort: 'high' }));
    expect(sent[0]).toMatchObject({ reasoning_effort: 'high', tools: TOOLS });
    expect(chunks.map((c) => c.reasoning ?? '').join('')).toBe('Need weather.');
    expect(result).toMatchObject({ text: '', reasoning: 'Need weather.', finishReason: 'tool_calls', toolCalls: [{ name: 'get_current_weather', arguments: '{"location":"Tokyo"}' }] });

    // A server that names the field `reasoning` (newer vLLM) reads the same.
    const renamed = sse.replaceAll('"reasoning_content":', '"reasoning":');
    expect(renamed).not.toBe(sse);
    const fetch2 = (async () => new Response(renamed, { status: 200, headers: { 'Content-Type': 'text/event-stream' } })) as unknown as typeof globalThis.fetch;
    const r2 = await drain(createRemoteEngine({ baseURL: 'http://server/v1', model: 'gpt-oss', fetch: fetch2 }).chat([{ role: 'user', content: 'Weather?' }]));
    expect(r2.result.reasoning).toBe('Need weather.');
  }, 60_000);

  it('the README example: reasoning, answer and tool calls through both APIs', async () => {
    const tools = TOOLS;
    const thinking = { textContent: '' }, output = { textContent: '' };
    const restore = script(engine,
      '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>{"location":"Tokyo"}<|call|>',
      '<|channel|>analysis<|message|>Greeting.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>');
    try {
      // README:begin harmony
      const reply = await engine.chat.completions.create({
        messages: [{ role: 'user', content: 'Weather in Tokyo?' }],
        tools, reasoning_effort: 'low', max_tokens: 256,
      });
      const { reasoning_content, content, tool_calls } = reply.choices[0].message;   // finish_reason: 'tool_calls'

      for await (const chunk of engine.chat([{ role: 'user', content: 'Hi' }], { reasoningEffort: 'high' })) {
        if (chunk.reasoning) thinking.textContent += chunk.reasoning;   // the analysis channel
        output.textContent += chunk.text;                              // the final channel: the answer
      }
      // README:end
      expect({ reasoning_content, content, name: tool_calls?.[0].function.name, finish: reply.choices[0].finish_reason }).toEqual({ reasoning_content: 'Need weather.', content: '', name: 'get_current_weather', finish: 'tool_calls' });
      expect({ thinking: thinking.textContent, output: output.textContent }).toEqual({ thinking: 'Greeting.', output: 'Hello!' });
    } finally { restore(); }
  }, 60_000);

  it('JSON mode with a harmony chat is an ArgumentError naming the conflict', async () => {
    await expect(drain(engine.chat([{ role: 'user', content: 'x' }], { responseFormat: 'json_object', maxTokens: 8 }))).rejects.toThrow(/harmony/);
  });
});
