# The Express dispatch app, serving the production build of the React client.

# Stage 0: the @celery-pushserver packages (the clients/js npm workspace), built.
FROM node:22-bookworm-slim AS packages
WORKDIR /src/clients/js
COPY clients/js/ ./
RUN npm ci --no-audit --no-fund && npm run build --workspaces && npm prune --omit=dev --no-audit --no-fund

# Stage 1: build the React client (Vite) into examples/react-client/dist. It
# installs @celery-pushserver/client and /react from ../../clients/js, packed
# like registry packages (.npmrc: install-links=true).
FROM node:22-bookworm-slim AS client
COPY --from=packages /src/clients/js /src/clients/js
WORKDIR /src/examples/react-client
COPY examples/react-client/package.json examples/react-client/package-lock.json examples/react-client/.npmrc ./
RUN npm ci --no-audit --no-fund
COPY examples/react-client/index.html examples/react-client/vite.config.js ./
COPY examples/react-client/public ./public
COPY examples/react-client/src ./src
RUN npm run build

# Stage 2: Express with production dependencies only. The same layout as the
# repository, so the app's default STATIC_DIR (../react-client/dist) finds the build.
FROM node:22-bookworm-slim
ENV NODE_ENV=production
# Express depends on @celery-pushserver/node through file:../../clients/js/node,
# whose own dependencies resolve from clients/js/node_modules.
COPY --from=packages /src/clients/js/node_modules /app/clients/js/node_modules
COPY --from=packages /src/clients/js/node/package.json /app/clients/js/node/
COPY --from=packages /src/clients/js/node/dist /app/clients/js/node/dist
WORKDIR /app/examples/express-dispatch
COPY examples/express-dispatch/package.json examples/express-dispatch/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY examples/express-dispatch/src ./src
COPY --from=client /src/examples/react-client/dist /app/examples/react-client/dist

USER node
EXPOSE 3000
CMD ["node", "src/server.js"]
