import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import App from './App.jsx';
import { resolvePushserverUrl } from './config.js';
import { configureTaskSocket } from './taskSocket.js';
import './styles.css';

const url = await resolvePushserverUrl();
configureTaskSocket({ url });

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
