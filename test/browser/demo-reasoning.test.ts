// The demo's reply view with a reasoning model (GPT-OSS harmony chats): reasoning chunks stream into a
// collapsed "Reasoning" section above the answer, the answer's token spans hold only the answer, and the
// tool calls of the result are listed after it. A reply without reasoning shows no such section.
import { describe, it, expect } from 'vitest';
import { ChatView } from '../../src/pages/demo/chat';
import type { GenerationChunk, GenerationResult } from '../../src/engine/types';

const frame = () => new Promise((r) => requestAnimationFrame(() => r(null)));
const result = (over: Partial<GenerationResult>): GenerationResult => ({
  text: '', tokens: [1, 2, 3], completionTokens: 3, promptTokens: 5, reusedTokens: 0, finishReason: 'eos',
  timeToFirstTokenMs: 10, prefillTokPerS: 100, decodeTokPerS: 10, ...over,
});

function view() {
  const list = document.createElement('div'), empty = document.createElement('div');
  list.appendChild(empty);
  document.body.appendChild(list);
  return { list, chat: new ChatView(list, empty, () => {}) };
}

describe('demo reply view: reasoning apart from the answer', () => {
  it('streams reasoning into a collapsed section and the answer into the body; lists tool calls', async () => {
    const { list, chat } = view();
    const reply = chat.startReply(null, { model: 'gpt-oss', mode: 'webgpu' });
    const details = list.querySelector<HTMLDetailsElement>('details.reasoning')!;
    expect(details.hidden).toBe(true);
    const chunks: GenerationChunk[] = [
      { token: 10, text: '', index: 0, reasoning: 'User asks ' },
      { token: 11, text: '', index: 1, reasoning: 'the weather.' },
      { token: 12, text: 'Let me check.', index: 2 },
    ];
    for (const c of chunks) reply.push(c);
    await frame();
    expect(details.hidden).toBe(false);
    expect(details.open).toBe(false);
    expect(details.querySelector('.reasoning-body')!.textContent).toBe('User asks the weather.');
    expect([...reply.body.querySelectorAll('.tok')].map((s) => s.textContent).join('')).toBe('Let me check.');
    reply.finish(result({ text: 'Let me check.', reasoning: 'User asks the weather.', finishReason: 'tool_calls', toolCalls: [{ name: 'get_weather', recipient: 'functions.get_weather', arguments: '{"city":"Tokyo"}', contentType: 'json' }] }));
    expect(list.querySelector('.tool-call')!.textContent).toBe('→ get_weather({"city":"Tokyo"})');
    expect(list.querySelector('.meta')!.textContent).toContain('tool call');
    list.remove();
  });

  it('a reply without reasoning shows no reasoning section', async () => {
    const { list, chat } = view();
    const reply = chat.startReply(null, { model: 'tiny', mode: 'webgpu' });
    reply.push({ token: 1, text: 'Hello', index: 0 });
    await frame();
    reply.finish(result({ text: 'Hello' }));
    expect(list.querySelector<HTMLDetailsElement>('details.reasoning')!.hidden).toBe(true);
    expect(list.querySelector('.tool-call')).toBeNull();
    list.remove();
  });
});
