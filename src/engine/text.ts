/**
 * Text in and out: the model's tokenizer (built and checked once, when the checkpoint is opened), its
 * chat template through @huggingface/jinja, and a streaming decoder that never emits half a UTF-8
 * character.
 */
import { Template } from '@huggingface/jinja';
import { loadTokenizer, type Tokenizer } from '../loader/tokenizer-file';
import { ArgumentError, FormatError } from '../errors';
import { harmonyTokensOf, type HarmonyTokens } from './harmony';

/**
 * A message of a conversation. Beyond role and text, the fields chat templates read for reasoning and
 * tool use (Hugging Face's names): an assistant turn's `thinking` (its reasoning) and `tool_calls`, and a
 * `tool` message answering the last tool call (GPT-OSS's template renders these; others may ignore them).
 */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  thinking?: string;
  tool_calls?: ChatToolCall[];
}

/** A tool call in a conversation's history, as chat templates take it: arguments as an object (or the text the model wrote). */
export interface ChatToolCall { id?: string; type?: 'function'; function: { name: string; arguments: Record<string, unknown> | string } }

/** A function the model may call (OpenAI's `tools` entries; chat templates render their JSON schema). */
export interface ChatTool { type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown> } }

/** Inputs of a chat template beyond the messages (each passed only when set, so the template's defaults apply). */
export interface ChatTemplateOptions {
  /** GPT-OSS: the system message's `Reasoning:` level (the template's default is medium). */
  reasoningEffort?: 'low' | 'medium' | 'high';
  tools?: ChatTool[];
}

/**
 * How special tokens are added around raw text, decided as Hugging Face `transformers` (v5 TokenizersBackend)
 * decides it: when tokenizer_config.json names `add_bos_token` or `add_eos_token`, the tokenizer is rebuilt
 * as `[bos] $A [eos]` from those two flags (LlamaTokenizerFast did the same); otherwise tokenizer.json's
 * `post_processor` applies (e.g. TemplateProcessing `<bos> $A`), and a file without one adds nothing.
 */
type SpecialTokenRule = { kind: 'flags'; bos: number | null; eos: number | null } | { kind: 'post-processor' };

export class TextCodec {
  private template: Template | null = null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly eosIds: number[];
  /** Id of the BOS token named by tokenizer_config.json, when the vocabulary has it. */
  readonly bosId: number | null;
  /** Whether the model's files declare a BOS at the start of every sequence (add_bos_token or the post-processor). */
  readonly addsBos: boolean;
  private readonly specials: SpecialTokenRule;
  /**
   * GPT-OSS's harmony format: the control tokens, when the vocabulary has them and the chat template
   * writes harmony messages (`<|channel|>`). Chats with such a model are parsed into reasoning, content
   * and tool calls (engine/harmony.ts).
   */
  readonly harmony: HarmonyTokens | null;

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
    const idOf = (t: string | null) => (t === null ? null : (this.tokenizer.token_to_id(t) ?? null));
    this.bosId = idOf(this.bosToken);
    if (tokenizerConfig && ('add_bos_token' in tokenizerConfig || 'add_eos_token' in tokenizerConfig)) {
      // A flag set without its token (or with a token outside the vocabulary) adds nothing, as in transformers.
      this.specials = {
        kind: 'flags',
        bos: tokenizerConfig.add_bos_token === true ? this.bosId : null,
        eos: tokenizerConfig.add_eos_token === true ? idOf(this.eosToken) : null,
      };
      this.addsBos = this.specials.bos !== null;
    } else {
      this.specials = { kind: 'post-processor' };
      let first: number | undefined;
      try {
        first = this.tokenizer.encode('', { add_special_tokens: true }).ids[0];
      } catch (e) {
        throw new FormatError(`tokenizer.json: the post_processor fails: ${(e as Error).message}`);
      }
      this.addsBos = this.bosId !== null && first === this.bosId;
    }
    const tpl = tokenizerConfig?.chat_template;
    const source = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? (tpl.find((t: any) => t?.name === 'default')?.template ?? null) : null;
    if (source) {
      try {
        this.template = new Template(source);
      } catch (e) {
        throw new FormatError(`tokenizer_config.json: chat_template does not parse: ${(e as Error).message}`);
      }
    }
    this.harmony = source?.includes('<|channel|>') ? harmonyTokensOf((t) => this.tokenizer.token_to_id(t)) : null;
  }

  /** A codec from tokenizer.json (and tokenizer_config.json) contents, checked as at checkpoint open. */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown> | null, eosIdsFromConfig: number[]): TextCodec {
    return new TextCodec(loadTokenizer(tokenizerJson, tokenizerConfig), tokenizerConfig, eosIdsFromConfig);
  }

  get hasChatTemplate(): boolean { return this.template !== null; }

  /**
   * Token ids of raw text. With addSpecialTokens, the special tokens the model's files declare are added
   * (see SpecialTokenRule), except that a BOS the text already starts with is not doubled: the model was
   * trained on one BOS, and `generate('<bos>x')` must equal `generate('x')`.
   */
  encode(text: string, addSpecialTokens = true): number[] {
    if (!addSpecialTokens) return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    let ids: number[];
    if (this.specials.kind === 'flags') {
      const { bos, eos } = this.specials;
      ids = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
      ids = [...(bos !== null ? [bos] : []), ...ids, ...(eos !== null ? [eos] : [])];
    } else {
      ids = this.tokenizer.encode(text, { add_special_tokens: true }).ids;
    }
    return this.withoutAddedBos(text, ids);
  }

  /** Drops the BOS ids the special-token rule put before a BOS the text itself starts with. */
  private withoutAddedBos(text: string, ids: number[]): number[] {
    if (this.bosId === null || this.bosToken === null || this.bosToken === '') return ids;
    let written = 0;
    while (text.startsWith(this.bosToken, written * this.bosToken.length)) written++;
    if (written === 0) return ids;
    let leading = 0;
    while (leading < ids.length && ids[leading] === this.bosId) leading++;
    return leading > written ? ids.slice(leading - written) : ids;
  }

  decode(ids: number[], skipSpecial = true): string {
    if (ids.length === 0) return ''; // the tokenizer rejects an empty list (a generation can end before its first token)
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecial });
  }

  /**
   * The prompt text for a conversation: the model's chat template, or a plain "role: content" layout.
   * A template that rejects the conversation (raise_exception, e.g. GPT-OSS's for a tool message without
   * a tool call before it) is an ArgumentError with the template's message.
   */
  renderChat(messages: ChatMessage[], addGenerationPrompt = true, options: ChatTemplateOptions = {}): string {
    if (this.template) {
      const extra: Record<string, unknown> = {};
      if (options.reasoningEffort !== undefined) extra.reasoning_effort = options.reasoningEffort;
      if (options.tools !== undefined && options.tools.length > 0) extra.tools = options.tools;
      try {
        return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: this.bosToken ?? '', eos_token: this.eosToken ?? '', ...extra });
      } catch (e) {
        throw new ArgumentError(`the chat template rejects this conversation: ${(e as Error).message}`);
      }
    }
    const body = messages.map((m) => `${m.role[0].toUpperCase()}${m.role.slice(1)}: ${m.content}`).join('\n');
    return (this.bosToken ?? '') + body + (addGenerationPrompt ? '\nAssistant:' : '');
  }

  /**
   * Token ids of a conversation. The rendered text is tokenized without the post-processor (as
   * transformers' apply_chat_template does: an end-of-sequence after the generation prompt would end the
   * reply before it starts); a declared BOS is put first unless the template already wrote one.
   */
  encodeChat(messages: ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    const ids = this.encode(this.renderChat(messages, true, options), false);
    return this.addsBos && ids[0] !== this.bosId ? [this.bosId!, ...ids] : ids;
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
