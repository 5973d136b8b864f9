// The live page: microphone -> AudioWorklet -> WebSocket /stream, and file -> POST /transcribe.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const startButton = $('start');
  const stopButton = $('stop');
  const formatSelect = $('format');
  const partialText = $('partial');
  const finalText = $('final');
  const streamStatus = $('stream-status');
  const streamInfo = $('stream-info');
  let session = null; // {ctx, media, source, node, ws, stopping}

  function setStatus(element, text, isError) {
    element.textContent = text;
    element.classList.toggle('error', Boolean(isError));
  }

  async function checkServer() {
    try {
      const response = await fetch('/health');
      const health = await response.json();
      if (health.stream && health.stream.available) {
        const latency = health.stream.algorithmic_latency_ms;
        setStatus(streamStatus, `Streaming with ${health.stream.model.name}` +
          (latency ? ` (algorithmic latency ${latency.total_ms} ms)` : ''));
        startButton.disabled = false;
      } else {
        setStatus(streamStatus, (health.stream && health.stream.error) || 'Streaming is unavailable.', true);
        streamStatus.dataset.unavailable = '1';
      }
    } catch (err) {
      setStatus(streamStatus, `Cannot reach the server: ${err}`, true);
    }
  }

  function streamUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/stream`;
  }

  function cleanup() {
    if (!session) return;
    const s = session;
    session = null;
    try { s.source && s.source.disconnect(); } catch (e) { /* already disconnected */ }
    try { s.node && s.node.disconnect(); } catch (e) { /* already disconnected */ }
    if (s.media) s.media.getTracks().forEach((track) => track.stop());
    if (s.ctx) s.ctx.close();
    startButton.disabled = false;
    stopButton.disabled = true;
    formatSelect.disabled = false;
  }

  async function start() {
    startButton.disabled = true;
    formatSelect.disabled = true;
    partialText.textContent = '';
    finalText.textContent = '';
    finalText.dataset.state = 'recording';
    streamInfo.textContent = '';
    const format = formatSelect.value;
    const s = { stopping: false, chunks: 0 };
    session = s;
    try {
      s.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      try {
        s.ctx = new AudioContext({ sampleRate: 16000 });
      } catch (err) {
        s.ctx = new AudioContext(); // the server resamples any rate
      }
      await s.ctx.audioWorklet.addModule('/static/recorder-worklet.js');
      s.source = s.ctx.createMediaStreamSource(s.media);
      s.node = new AudioWorkletNode(s.ctx, 'recorder', {
        processorOptions: { chunkSamples: Math.round(s.ctx.sampleRate / 10), format },
      });
      s.ws = new WebSocket(streamUrl());
      s.ws.binaryType = 'arraybuffer';
      const queue = [];
      s.ws.onopen = () => {
        s.ws.send(JSON.stringify({ sample_rate: s.ctx.sampleRate, format }));
        queue.splice(0).forEach((item) => s.ws.send(item));
        stopButton.disabled = false;
      };
      s.ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (msg.error) {
          finalText.dataset.state = 'error';
          setStatus(streamInfo, msg.error, true);
        } else if (msg.partial !== undefined) {
          partialText.textContent = msg.partial;
          streamInfo.textContent = `${msg.audio_s.toFixed(1)} s received`;
        } else if (msg.text !== undefined) {
          partialText.textContent = msg.text;
          finalText.textContent = msg.text;
          finalText.dataset.state = 'done';
          streamInfo.textContent = `${msg.duration.toFixed(2)} s of audio, ${msg.words.length} words`;
        }
      };
      s.ws.onclose = () => {
        if (finalText.dataset.state === 'recording') {
          finalText.dataset.state = 'error';
          setStatus(streamInfo, 'The connection closed before the final text.', true);
        }
        cleanup();
      };
      const send = (item) => {
        if (s.ws.readyState === WebSocket.OPEN) s.ws.send(item);
        else if (s.ws.readyState === WebSocket.CONNECTING) queue.push(item);
      };
      s.node.port.onmessage = (event) => {
        if (event.data && event.data.done) {
          send(JSON.stringify({ eof: 1 }));
          return;
        }
        s.chunks += 1;
        send(event.data);
      };
      s.source.connect(s.node);
      const silent = s.ctx.createGain(); // keeps the graph pulled without playing anything
      silent.gain.value = 0;
      s.node.connect(silent).connect(s.ctx.destination);
      setStatus(streamInfo, `Listening at ${s.ctx.sampleRate} Hz…`);
    } catch (err) {
      finalText.dataset.state = 'error';
      setStatus(streamInfo, `Microphone unavailable: ${err.message || err}`, true);
      cleanup();
    }
  }

  function stop() {
    if (!session || session.stopping) return;
    session.stopping = true;
    stopButton.disabled = true;
    session.node.port.postMessage('flush'); // the worklet posts its last samples, then {done: true}
  }

  async function upload(event) {
    event.preventDefault();
    const result = $('upload-result');
    const info = $('upload-info');
    const file = $('file').files[0];
    if (!file) {
      setStatus(info, 'Choose an audio file first.', true);
      return;
    }
    result.dataset.state = 'working';
    result.textContent = '';
    setStatus(info, `Transcribing ${file.name}…`);
    const body = new FormData();
    body.append('file', file);
    try {
      const response = await fetch('/transcribe', { method: 'POST', body });
      const data = await response.json();
      if (data.status === 'OK') {
        result.textContent = data.transcription;
        result.dataset.state = 'done';
        setStatus(info, `${data.duration.toFixed(2)} s of audio`);
      } else {
        result.dataset.state = 'error';
        setStatus(info, data.message || `HTTP ${response.status}`, true);
      }
    } catch (err) {
      result.dataset.state = 'error';
      setStatus(info, `Upload failed: ${err}`, true);
    }
  }

  startButton.addEventListener('click', start);
  stopButton.addEventListener('click', stop);
  $('upload-form').addEventListener('submit', upload);
  checkServer();
})();
