// Server-Sent Events over fetch: the browser's EventSource cannot send an Authorization
// header, and the token must never go into a URL. The reader reconnects by itself, with
// `Last-Event-ID` set to the last id it saw, so the server resumes with no gap and no
// duplicate (on whichever replica the connection lands).

import { BASE, authHeaders, ApiError } from "./api.js";

/**
 * Follows `path` until `close()`.
 * - `onEvent(name, data, id)` for every event (data parsed as JSON when it is JSON);
 * - `onState(state, detail)`: "connecting", "live", "reconnecting" (detail: seconds until the
 *   next try and the error), "closed" (the server ended it for good: detail is the ApiError).
 */
export function follow(path, { onEvent, onState = () => {}, lastEventId = null }) {
  let controller = null;
  let closed = false;
  let lastId = lastEventId;
  let failures = 0;

  async function run() {
    while (!closed) {
      controller = new AbortController();
      onState(failures === 0 ? "connecting" : "reconnecting", { delay: 0 });
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(BASE + path, { headers, signal: controller.signal });
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch {
            // no JSON body
          }
          const error = new ApiError(response.status, body);
          // 4xx other than 429 will not get better by retrying.
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            closed = true;
            onState("closed", error);
            return;
          }
          throw error;
        }
        failures = 0;
        onState("live");
        await read(response.body, (name, data, id) => {
          if (id) lastId = id;
          failures = 0;
          onEvent(name, data, id);
        });
        // The server ended the stream (a drain, a deleted chat): reconnect like after an error.
        if (!closed) throw new Error("the stream ended");
      } catch (error) {
        if (closed) return;
        failures += 1;
        const delay = Math.min(10, 2 ** Math.min(failures - 1, 4) * 0.5);
        onState("reconnecting", { delay, error });
        await new Promise((resolve) => setTimeout(resolve, delay * 1000));
      }
    }
  }

  run();
  return {
    close() {
      closed = true;
      if (controller) controller.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}

/** Parses an SSE body, calling `emit(event, data, id)` per event. */
async function read(body, emit) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) {
          const text = data.join("\n");
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // plain text data
          }
          emit(name || "message", parsed, id);
        }
        name = "";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const key = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (key === "event") name = val;
      else if (key === "data") data.push(val);
      else if (key === "id") id = val;
    }
  }
}
