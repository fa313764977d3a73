// A Firestore emulator in Node (@firestore-emulator/server), the fallback when gcloud's
// emulator is not installed. Usage: node serve.js PORT. Prints "ready PORT" once it listens;
// stops on SIGTERM/SIGINT. It serves WriteBatch commits, get and simple queries: what
// navstream's firestore sink and its tests use (see docs/firestore.md).
"use strict";
const { FirestoreServer } = require("@firestore-emulator/server");

const port = Number(process.argv[2] || process.env.PORT || 8080);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`usage: node serve.js PORT (got ${process.argv[2]})`);
  process.exit(2);
}
const server = new FirestoreServer();
server.start(port).then(
  () => console.log(`ready ${port}`),
  (err) => {
    console.error(`cannot listen on ${port}: ${err.message}`);
    process.exit(1);
  },
);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.stop();
    process.exit(0);
  });
}
