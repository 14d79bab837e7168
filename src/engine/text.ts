/**
 * Text in and out: the model's tokenizer (built and checked once, when the checkpoint is opened), its
 * chat template through @huggingface/jinja, and a streaming decoder that never emits half a UTF-8
 * character.
 */
import { Template } from '@huggingface/jinja';
import { loadTokenizer, type Tokenizer } from '../loader/tokenizer-file';
import { FormatError } from '../errors';

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }

export class TextCodec {
  private template: Template | null = null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly eosIds: number[];

  /** Takes the checkpoint's tokenizer (Checkpoint.tokenizer) with its tokenizer_config.json. */
  constructor(readonly tokenizer: Tokenizer, tokenizerConfig: Record<string, unknown> | null, eosIdsFromConfig: number[]) {
    const tokenText = (t: unknown) => (typeof t === 'string' ? t : t && typeof t === 'object' && typeof (t as any).content === 'string' ? (t as any).content : null);
    this.bosToken = tokenText(tokenizerConfig?.bos_token);
    this.eosToken = tokenText(tokenizerConfig?.eos_token);
    const eos = new Set(eosIdsFromConfig);
    if (this.eosToken) {
      const id = this.tokenizer.token_to_id(this.eosToken);
      if (id !== undefined) eos.add(id);
    }
    this.eosIds = [...eos];
    const tpl = tokenizerConfig?.chat_template;
    const source = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? (tpl.find((t: any) => t?.name === 'default')?.template ?? null) : null;
    if (source) {
      try {
        this.template = new Template(source);
      } catch (e) {
        throw new FormatError(`tokenizer_config.json: chat_template does not parse: ${(e as Error).message}`);
      }
    }
  }

  /** A codec from tokenizer.json (and tokenizer_config.json) contents, checked as at checkpoint open. */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown> | null, eosIdsFromConfig: number[]): TextCodec {
    return new TextCodec(loadTokenizer(tokenizerJson, tokenizerConfig), tokenizerConfig, eosIdsFromConfig);
  }

  get hasChatTemplate(): boolean { return this.template !== null; }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecial = true): string {
    if (ids.length === 0) return ''; // the tokenizer rejects an empty list (a generation can end before its first token)
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecial });
  }

  /** The prompt text for a conversation: the model's chat template, or a plain "role: content" layout. */
  renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (this.template) {
      return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: this.bosToken ?? '', eos_token: this.eosToken ?? '' });
    }
    const body = messages.map((m) => `${m.role[0].toUpperCase()}${m.role.slice(1)}: ${m.content}`).join('\n');
    return (this.bosToken ?? '') + body + (addGenerationPrompt ? '\nAssistant:' : '');
  }

  /** Token ids of a conversation. The template supplies special tokens itself, so none are added. */
  encodeChat(messages: ChatMessage[]): number[] {
    return this.encode(this.renderChat(messages), !this.template);
  }
}

/**
 * Turns a growing list of token ids into text deltas. Byte-level BPE tokens can split a character, so
 * text ending in U+FFFD is held back until the next token completes it. Each push decodes only a short
 * window (the unemitted tokens plus the one before them, which carries any leading-space convention of
 * the decoder), so streaming n tokens costs O(n), not O(n²).
 */
export class StreamDecoder {
  private ids: number[] = [];
  private prefix = 0; // window start: one token before the unemitted ones
  private read = 0; // end of what has been emitted
  private out = '';
  constructor(private codec: TextCodec) {}

  push(id: number): string {
    this.ids.push(id);
    return this.step(false);
  }

  /** Whatever is left (a dangling partial character is emitted as is at the end). */
  flush(): string {
    return this.step(true);
  }

  private step(final: boolean): string {
    const before = this.codec.decode(this.ids.slice(this.prefix, this.read));
    const now = this.codec.decode(this.ids.slice(this.prefix));
    if (now.length <= before.length || (!final && now.endsWith('\uFFFD'))) return '';
    const delta = now.slice(before.length);
    this.prefix = this.read;
    this.read = this.ids.length;
    this.out += delta;
    return delta;
  }

  get text(): string { return this.out; }
}
