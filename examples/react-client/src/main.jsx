import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { createTaskClient } from '@celery-pushserver/client';
import { TaskClientProvider } from '@celery-pushserver/react';
import App from './App.jsx';
import { fetchTaskToken } from './api.js';
import { resolvePushserverUrl } from './config.js';
import './styles.css';

// One client (one socket) for the page. When a task's token expires the
// pushserver says `token_expired` (or refuses a re-subscribe as
// `unauthorized`); the client then asks Express for a fresh one and
// subscribes again, and the snapshot fills whatever happened meanwhile.
const client = createTaskClient({
  url: await resolvePushserverUrl(),
  getToken: fetchTaskToken,
});

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <TaskClientProvider client={client}>
      <App />
    </TaskClientProvider>
  </StrictMode>,
);
