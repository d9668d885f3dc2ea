/** Example preload: `window.tasks` with the default methods; nothing else reaches the page. */
import { contextBridge, ipcRenderer } from 'electron';
import { exposeTaskApi } from '@task-sidecar/electron-bridge/preload';

exposeTaskApi({ contextBridge, ipcRenderer });
