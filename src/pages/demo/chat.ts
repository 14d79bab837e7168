/**
 * The conversation view: user messages, streamed replies (one span per token, so hovering a token shows
 * its experts in the routing view), and a one-line summary under each finished reply. The latest
 * reply's body carries id="output" and data-tokens (read by the end-to-end test). A reasoning model's
 * thinking (GPT-OSS's analysis channel: GenerationChunk.reasoning) streams into a collapsed "Reasoning"
 * section above the answer, and its tool calls are listed under it.
 */
import type { GenerationChunk, GenerationResult } from '../../engine/types';
import { escapeHtml, fmtMs, fmtNum } from '../format';

export interface ReplyMeta { model: string; mode: string }

export class Reply {
  readonly el: HTMLElement;
  readonly body: HTMLElement;
  private meta: HTMLElement;
  private reasoning: HTMLDetailsElement;
  private reasoningBody: HTMLElement;
  private pending: GenerationChunk[] = [];
  private raf = 0;
  tokens = 0;
  text = '';

  constructor(private view: ChatView, raw: string | null, info: ReplyMeta) {
    this.el = document.createElement('article');
    this.el.className = `msg assistant${raw !== null ? ' raw' : ''}`;
    this.el.innerHTML = `<div class="who">${raw !== null ? 'Completion' : 'Assistant'} <span class="badge">${escapeHtml(info.model)}</span><span class="badge">${escapeHtml(info.mode)}</span></div>
      <details class="reasoning" hidden><summary>Reasoning</summary><div class="reasoning-body"></div></details>
      <div class="body streaming">${raw !== null ? `<span class="prompt">${escapeHtml(raw)}</span>` : ''}<span class="caret"></span></div>
      <div class="meta">Waiting for the first token…</div>`;
    this.body = this.el.querySelector('.body')!;
    this.meta = this.el.querySelector('.meta')!;
    this.reasoning = this.el.querySelector('details.reasoning')!;
    this.reasoningBody = this.el.querySelector('.reasoning-body')!;
    document.getElementById('output')?.removeAttribute('id');
    this.body.id = 'output';
    this.body.dataset.tokens = '0';
    this.body.dataset.state = 'streaming';
  }

  /** Buffered: the DOM is touched at most once per frame. */
  push(chunk: GenerationChunk): void {
    this.pending.push(chunk);
    this.text += chunk.text;
    this.tokens++;
    if (!this.raf) this.raf = requestAnimationFrame(() => this.flush());
  }

  private flush(): void {
    this.raf = 0;
    if (!this.pending.length) return;
    const frag = document.createDocumentFragment();
    for (const c of this.pending) {
      if (c.reasoning) {
        this.reasoning.hidden = false;
        this.reasoningBody.append(c.reasoning);
      }
      if (!c.text && c.reasoning) continue;
      const s = document.createElement('span');
      s.className = 'tok';
      s.dataset.i = String(c.index);
      s.dataset.token = String(c.token);
      s.textContent = c.text;
      frag.appendChild(s);
    }
    this.pending = [];
    this.body.insertBefore(frag, this.body.querySelector('.caret'));
    this.body.dataset.tokens = String(this.tokens);
    this.view.follow();
  }

  progress(tokPerS: number, ttftMs: number): void {
    this.meta.textContent = `${this.tokens} tokens · ${fmtNum(tokPerS)} tok/s · first token after ${fmtMs(ttftMs)}`;
  }

  finish(r: GenerationResult): void {
    this.flush();
    this.done('done');
    const why = { eos: 'end of sequence', stop: 'stop string', length: 'max tokens', aborted: 'stopped', context: 'context full', tool_calls: 'tool call' }[r.finishReason];
    for (const call of r.toolCalls ?? []) {
      const el = document.createElement('div');
      el.className = 'tool-call';
      el.textContent = `→ ${call.name}(${call.arguments})`;
      this.body.after(el);
    }
    const reused = r.reusedTokens ? ` (${r.reusedTokens} reused from cache)` : '';
    this.meta.textContent = `${r.tokens.length} tokens · ${fmtNum(r.decodeTokPerS)} tok/s decode · ${fmtNum(r.prefillTokPerS)} tok/s prefill of ${r.promptTokens} prompt tokens${reused} · first token ${fmtMs(r.timeToFirstTokenMs)} · ${why}`;
    this.body.dataset.finish = r.finishReason;
    if (!this.tokens && r.finishReason !== 'aborted') this.body.insertAdjacentHTML('beforeend', '<span class="muted">(no tokens: the model ended at once)</span>');
  }

  fail(message: string): void {
    this.flush();
    this.done('error');
    this.el.classList.add('failed');
    this.meta.textContent = `Failed: ${message}`;
  }

  private done(state: string): void {
    this.body.classList.remove('streaming');
    this.body.querySelector('.caret')?.remove();
    this.body.dataset.state = state;
    this.body.dataset.tokens = String(this.tokens);
  }
}

export class ChatView {
  constructor(private list: HTMLElement, private empty: HTMLElement, onHover: (index: number | null) => void) {
    // Hovering a token of the latest reply outlines its experts in the routing view.
    list.addEventListener('mouseover', (ev) => {
      const t = (ev.target as HTMLElement).closest<HTMLElement>('#output .tok');
      onHover(t ? Number(t.dataset.i) : null);
    });
    list.addEventListener('mouseleave', () => onHover(null));
  }

  clear(): void {
    this.list.querySelectorAll('.msg').forEach((m) => m.remove());
    this.empty.hidden = false;
  }

  addUser(text: string): HTMLElement {
    this.empty.hidden = true;
    const el = document.createElement('article');
    el.className = 'msg user';
    el.innerHTML = `<div class="who">You</div><div class="body"></div>`;
    el.querySelector('.body')!.textContent = text;
    this.list.appendChild(el);
    this.follow(true);
    return el;
  }

  startReply(raw: string | null, meta: ReplyMeta): Reply {
    this.empty.hidden = true;
    const r = new Reply(this, raw, meta);
    this.list.appendChild(r.el);
    this.follow(true);
    return r;
  }

  /** Keeps the newest text in view unless the user scrolled up to read. */
  follow(force = false): void {
    const l = this.list;
    if (force || l.scrollHeight - l.scrollTop - l.clientHeight < 120) l.scrollTop = l.scrollHeight;
  }
}
