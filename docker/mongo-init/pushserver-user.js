// Run by the mongo image once, when its data volume is first initialised
// (/docker-entrypoint-initdb.d), as the root user: creates the account the
// pushserver replicas log events with. It may read and write its own
// database (insert events, create the history and TTL indexes, read history)
// and nothing else: no other database, no user or server administration.
// docker-compose.yml hands this script its three settings, from .env.
const dbName = process.env.PUSHSERVER_MONGO_DB;
const user = process.env.PUSHSERVER_MONGO_USER;
const password = process.env.PUSHSERVER_MONGO_PASSWORD;
if (!dbName || !user || !password) {
  throw new Error("PUSHSERVER_MONGO_DB, PUSHSERVER_MONGO_USER and PUSHSERVER_MONGO_PASSWORD must be set");
}
db.getSiblingDB(dbName).createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: dbName }],
});
print(`created MongoDB user ${user} with readWrite on ${dbName}`);
