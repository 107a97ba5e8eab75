// Preloaded into kinesalite and dynalite (node -r): both rethrow a request's 'error' event, so a
// client that drops its connection in the middle of sending a request (a cancelled context, a
// fault-injection proxy's connection reset) kills the whole emulator and fails every later test.
// The real services survive that, so the local stack must too: such an abort is logged and
// ignored; any other uncaught error still ends the process.
'use strict';
process.on('uncaughtException', (err) => {
  if (err && (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.message === 'aborted')) {
    console.error(`${new Date().toISOString()} ignored: a client aborted its request (${err.code || err.message})`);
    return;
  }
  console.error(err);
  process.exit(1);
});
