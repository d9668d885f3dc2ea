/**
 * Example Electron main process: one SidecarClient for the app, the IPC relay for its windows.
 * Build with your usual tooling (tsc/esbuild); this file type-checks with `npm test`.
 */
import * as path from 'node:path';
import { app, BrowserWindow, ipcMain } from 'electron';
import { SidecarClient, registerTaskIpc, resolveSidecarCommand } from '@task-sidecar/electron-bridge/main';

let client: SidecarClient | null = null;

async function createWindow(): Promise<void> {
  const win = new BrowserWindow({
    width: 900,
    height: 700,
    webPreferences: {
      preload: path.join(__dirname, 'preload.js'), // bundled (sandbox: true allows no relative requires)
      contextIsolation: true,
      nodeIntegration: false,
      sandbox: true,
    },
  });
  await win.loadFile(path.join(__dirname, 'index.html'));
}

app.whenReady().then(async () => {
  // Packaged: <resources>/sidecar/task-sidecar; development: python -m sidecar from the repo.
  const program = resolveSidecarCommand({ isPackaged: app.isPackaged, sourceRoot: path.resolve(__dirname, '..', '..') });
  client = await SidecarClient.start({
    command: program.command,
    args: program.args,
    ...(program.cwd ? { cwd: program.cwd } : {}),
    dbPath: path.join(app.getPath('userData'), 'tasks.db'),
    logger: (e) => console.log(`[sidecar ${e.source}] ${e.message}`),
  });
  client.on('restarted', (info) => console.log(`sidecar restarted (pid ${info.pid}, requeued ${info.recovered.requeued})`));
  client.on('restart-failed', ({ error }) => console.error('sidecar is down for good:', error.message));

  registerTaskIpc({
    ipcMain,
    client,
    getWindows: () => BrowserWindow.getAllWindows(),
    // allowedOrigins: ['http://localhost:5173'],  // when the page is served by a dev server
  });
  await createWindow();
});

// Never leave a sidecar behind: stop it before quitting (system.shutdown, then SIGTERM, SIGKILL).
let quitting = false;
app.on('before-quit', (event) => {
  if (quitting || !client) return;
  event.preventDefault();
  quitting = true;
  void client.close().finally(() => app.quit());
});
app.on('window-all-closed', () => app.quit());
