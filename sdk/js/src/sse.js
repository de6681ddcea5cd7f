// @ts-check
/**
 * A Server-Sent Events parser (the WHATWG "event stream interpretation"),
 * written by hand: lines end with CRLF, LF or CR; `field: value` with one
 * optional space after the colon; `data` lines join with LF; a blank line
 * dispatches; lines starting with `:` are comments; `id` without NUL sets
 * the last event id; an event with no data is not dispatched.
 */

/**
 * @typedef {{event: string, data: string, id: string|null}} SseEvent
 */

export class SseParser {
  /** @param {number} [lineBytesMax] longest line kept (a guard against a runaway stream) */
  constructor(lineBytesMax = 16 * 1024 * 1024) {
    this.buffer = '';
    this.sawCR = false;
    this.data = /** @type {string[]} */ ([]);
    this.hasData = false;
    this.eventType = '';
    /** The last event id, as the stream set it. @type {string|null} */
    this.lastEventId = null;
    this.lineBytesMax = lineBytesMax;
    this.first = true;
  }

  /**
   * Feeds decoded text; returns the events completed by it.
   * @param {string} text
   * @returns {SseEvent[]}
   */
  push(text) {
    /** @type {SseEvent[]} */
    const out = [];
    if (this.first && text.length > 0) {
      // A leading byte order mark is skipped.
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 /* \n */) {
        if (this.sawCR && i === start && this.buffer === '') {
          // The LF of a CRLF split across chunks.
          this.sawCR = false;
          start = i + 1;
          continue;
        }
        this.line(this.buffer + text.slice(start, i), out);
        this.buffer = '';
        this.sawCR = false;
        start = i + 1;
      } else if (c === 13 /* \r */) {
        this.line(this.buffer + text.slice(start, i), out);
        this.buffer = '';
        if (text.charCodeAt(i + 1) === 10) i++;
        else this.sawCR = i + 1 === text.length;
        start = i + 1;
      } else if (this.sawCR) {
        this.sawCR = false;
      }
    }
    if (start < text.length) {
      this.buffer += text.slice(start);
      this.sawCR = false;
      if (this.buffer.length > this.lineBytesMax) {
        throw new Error(`an event stream line longer than ${this.lineBytesMax} characters`);
      }
    }
    return out;
  }

  /** @param {string} line @param {SseEvent[]} out */
  line(line, out) {
    if (line === '') {
      if (this.hasData) {
        out.push({ event: this.eventType || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.data = [];
      this.hasData = false;
      this.eventType = '';
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return;
    const colon = line.indexOf(':');
    let field;
    let value;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case 'event': this.eventType = value; break;
      case 'data': this.data.push(value); this.hasData = true; break;
      case 'id': if (!value.includes('\0')) this.lastEventId = value; break;
      default: break; // `retry` and unknown fields are ignored
    }
  }
}
