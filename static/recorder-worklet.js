// AudioWorklet processor: mono capture in chunks of `chunkSamples`, posted to the page as
// ArrayBuffers of little-endian float32 or 16-bit PCM samples. A "flush" message posts what is
// buffered, then {done: true}; nothing is posted after that.
class RecorderProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.chunk = Math.max(128, opts.chunkSamples || 1600);
    this.format = opts.format === 'pcm16' ? 'pcm16' : 'float32';
    this.buffer = new Float32Array(this.chunk);
    this.filled = 0;
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data === 'flush' && !this.stopped) {
        this.post(this.filled);
        this.stopped = true;
        this.port.postMessage({ done: true });
      }
    };
  }

  post(n) {
    if (n === 0) return;
    const samples = this.buffer.slice(0, n);
    this.filled = 0;
    if (this.format === 'pcm16') {
      const pcm = new Int16Array(n);
      for (let i = 0; i < n; i++) {
        const s = Math.max(-1, Math.min(1, samples[i]));
        pcm[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
      }
      this.port.postMessage(pcm.buffer, [pcm.buffer]);
    } else {
      this.port.postMessage(samples.buffer, [samples.buffer]);
    }
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += input[c][i];
      this.buffer[this.filled++] = sum / channels;
      if (this.filled === this.chunk) this.post(this.chunk);
    }
    return true;
  }
}

registerProcessor('recorder', RecorderProcessor);
