// Search on a site opened as files (file://). Material runs its search in a Web Worker, and a
// browser will not start a worker from a file:// page. There, this runs the worker's script in
// a hidden frame of the page instead, with the same messages both ways; served over HTTP,
// nothing changes. The file's name holds "iframe-worker" because Material's offline plugin
// otherwise adds a shim for the same purpose from a CDN, which a reader offline cannot load.
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  function FrameWorker(url) {
    var worker = this;
    var listeners = [];
    var waiting = [];
    var started = false;
    var frame = document.createElement("iframe");
    frame.hidden = true;
    document.body.appendChild(frame);
    // A frame without a source is about:blank, of the page's own origin: the page may set up
    // its globals and run scripts in it.
    var scope = frame.contentWindow;

    function load(src) {
      return new Promise(function (resolve, reject) {
        var script = scope.document.createElement("script");
        script.src = new URL(src, location.href).href;
        script.onload = resolve;
        script.onerror = function () {
          reject(new Error("cannot load " + src));
        };
        scope.document.head.appendChild(script);
      });
    }

    function deliver(data) {
      scope.dispatchEvent(new scope.MessageEvent("message", { data: data }));
    }

    // What the worker's script calls as a worker's globals. A worker's messages arrive later,
    // never during the call that sent them: so do these.
    scope.postMessage = function (data) {
      var event = new MessageEvent("message", { data: data });
      setTimeout(function () {
        listeners.forEach(function (listener) {
          listener.call(worker, event);
        });
        if (typeof worker.onmessage === "function") {
          worker.onmessage(event);
        }
      });
    };
    // In a worker importScripts loads synchronously; Material's search awaits what it returns
    // (only for languages other than English), so a promise serves.
    scope.importScripts = function () {
      return Array.prototype.reduce.call(
        arguments,
        function (previous, src) {
          return previous.then(function () {
            return load(src);
          });
        },
        Promise.resolve()
      );
    };

    this.onmessage = null;
    this.postMessage = function (data) {
      // A copy, as a worker gets.
      data = structuredClone(data);
      if (started) {
        deliver(data);
      } else {
        waiting.push(data);
      }
    };
    this.addEventListener = function (type, listener) {
      if (type === "message") {
        listeners.push(listener);
      }
    };
    this.removeEventListener = function (type, listener) {
      listeners = listeners.filter(function (other) {
        return other !== listener;
      });
    };
    this.terminate = function () {
      frame.remove();
    };

    load(url).then(function () {
      started = true;
      waiting.splice(0).forEach(deliver);
    });
  }

  window.Worker = FrameWorker;
})();
