// Run by the mongo image once, when its data volume is first initialised
// (/docker-entrypoint-initdb.d), as the root user: creates the accounts of the
// example app. Each has its own database and only the actions its code does:
//
// - Express (EXPRESS_MONGO_USER, in APP_MONGO_DB): readWrite on the app's
//   database (users, task records, their indexes), and `find` on the workers'
//   reports, which the page shows.
// - The Celery workers (WORKERS_MONGO_USER, in WORKERS_MONGO_DB): readWrite on
//   their own database (nightly reports, archived task records), and on the
//   app's database only: read users (the welcome email), read and update task
//   records (state, output), remove the ones they archive.
//
// No user or server administration, no other database. docker-compose.yml
// hands this script its settings, from .env.
const appDb = process.env.APP_MONGO_DB;
const workersDb = process.env.WORKERS_MONGO_DB;
const expressUser = process.env.EXPRESS_MONGO_USER;
const expressPassword = process.env.EXPRESS_MONGO_PASSWORD;
const workersUser = process.env.WORKERS_MONGO_USER;
const workersPassword = process.env.WORKERS_MONGO_PASSWORD;
for (const [name, value] of Object.entries({ appDb, workersDb, expressUser, expressPassword, workersUser, workersPassword })) {
  if (!value) throw new Error(`${name} is not set: see docker-compose.yml's mongo service`);
}

db.getSiblingDB(workersDb).createRole({
  role: "reportsReader",
  privileges: [{ resource: { db: workersDb, collection: "reports" }, actions: ["find"] }],
  roles: [],
});
db.getSiblingDB(appDb).createRole({
  role: "workersOnApp",
  privileges: [
    { resource: { db: appDb, collection: "users" }, actions: ["find"] },
    { resource: { db: appDb, collection: "tasks" }, actions: ["find", "update", "remove"] },
  ],
  roles: [],
});

db.getSiblingDB(appDb).createUser({
  user: expressUser,
  pwd: expressPassword,
  roles: [{ role: "readWrite", db: appDb }, { role: "reportsReader", db: workersDb }],
});
db.getSiblingDB(workersDb).createUser({
  user: workersUser,
  pwd: workersPassword,
  roles: [{ role: "readWrite", db: workersDb }, { role: "workersOnApp", db: appDb }],
});
print(`created MongoDB users ${expressUser} (${appDb}) and ${workersUser} (${workersDb})`);
