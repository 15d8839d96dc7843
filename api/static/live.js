// The live view's player: one WebRTC connection per camera, H.264 preferred, the server's camera state
// over a data channel, and reconnection by itself when the connection or the camera drops.
"use strict";

const LIVE_RETRY_MS = [1000, 2000, 4000, 8000];
// Refusals that another try cannot change (the user must do something else first).
const LIVE_FINAL = new Set(["no_camera", "outside_viewing_hours", "no_h264", "disabled", "forbidden", "login"]);

class LivePlayer {
  // video: a <video> element; onStatus(code, detail) is told every change ("connecting", "live",
  // "offline", "viewer_limit", "ended", ...). token(): the bearer token, or null.
  constructor(video, cameraId, {token, onStatus}) {
    this.video = video;
    this.cameraId = cameraId;
    this.token = token;
    this.onStatus = onStatus;
    this.pc = null;
    this.session = null;
    this.closed = false;
    this.retries = 0;
    this.timer = null;
    // What the tests and the benchmark read: frames shown, time to the first one.
    this.stats = {frames: 0, firstFrameMs: null, startedAt: performance.now(), reconnects: 0};
    this.lastFrameAt = 0;
    this.cameraDown = false;
    video.muted = true;
    video.playsInline = true;
    video.autoplay = true;
    this._countFrames();
  }

  _countFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const onFrame = () => {
      this.stats.frames += 1;
      this.lastFrameAt = performance.now();
      if (this.stats.firstFrameMs === null) this.stats.firstFrameMs = this.lastFrameAt - this.stats.startedAt;
      if (this.closed) return;  // frames still in flight after the end change nothing
      // Frames still in flight when the server said the camera is down do not make it live again.
      if (this.status !== "live" && !this.cameraDown) this._status("live");
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  _status(code, detail) {
    this.status = code;
    this.onStatus(code, detail);
  }

  async start() {
    if (this.closed) return;
    this._status("connecting");
    const pc = new RTCPeerConnection();
    this.pc = pc;
    const transceiver = pc.addTransceiver("video", {direction: "recvonly"});
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
    // The server passes the camera's H.264 through: offer it first, and only it if the browser has it.
    if (h264.length) transceiver.setCodecPreferences(h264);
    const channel = pc.createDataChannel("status");
    channel.onmessage = (e) => this._message(JSON.parse(e.data));
    pc.ontrack = (e) => {
      this.video.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      this.video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (this.pc === pc && ["failed", "closed", "disconnected"].includes(pc.connectionState)) this._retry("offline");
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await this._gathered(pc);
      const headers = {"Content-Type": "application/json"};
      const token = this.token();
      if (token) headers.Authorization = `Bearer ${token}`;
      const r = await fetch(`/api/v1/live/${encodeURIComponent(this.cameraId)}/offer`, {
        method: "POST", headers, body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"}),
      });
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        const detail = body.detail && body.detail.code ? body.detail : {code: r.status === 401 ? "login"
          : r.status === 403 ? "forbidden" : "error", message: String(body.detail || r.status)};
        this._teardown();
        if (LIVE_FINAL.has(detail.code)) {
          this._status(detail.code, detail);
        } else {
          this._retry(detail.code, detail);
        }
        return;
      }
      const answer = await r.json();
      if (this.closed || this.pc !== pc) return;
      this.session = answer.session;
      this.privacy = answer.privacy;
      await pc.setRemoteDescription({type: "answer", sdp: answer.sdp});
      this.retries = 0;
    } catch (err) {
      if (this.pc === pc) this._retry("offline", {message: String(err)});
    }
  }

  _gathered(pc) {
    // The server takes one complete offer (no trickle ICE): wait for the candidates, at most 3 s.
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  _message(msg) {
    if (msg.type === "state") {
      this.cameraDown = msg.state === "offline";
      // "live" is said by the frames themselves; the server's word matters when the camera is away.
      if (msg.state === "offline" || (msg.state === "connecting" && this.stats.frames === 0)) {
        this._status(msg.state === "offline" ? "camera_offline" : "connecting", msg);
      }
    } else if (msg.type === "end") {
      this.closed = true;
      this._teardown();
      this._status(msg.reason, msg);
    }
  }

  _retry(code, detail) {
    if (this.closed) return;
    this._teardown();
    this._status(code, detail);
    const wait = LIVE_RETRY_MS[Math.min(this.retries, LIVE_RETRY_MS.length - 1)];
    this.retries += 1;
    this.stats.reconnects += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), wait);
  }

  _teardown() {
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
    if (this.session) {
      const headers = {};
      const token = this.token();
      if (token) headers.Authorization = `Bearer ${token}`;
      fetch(`/api/v1/live/sessions/${this.session}`, {method: "DELETE", headers, keepalive: true}).catch(() => {});
      this.session = null;
    }
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    this._teardown();
    this.video.srcObject = null;
  }
}
