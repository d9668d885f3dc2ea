import * as path from 'node:path';

export interface SidecarCommand {
  command: string;
  args: string[];
  cwd?: string | undefined;
}

export interface ResolveSidecarOptions {
  /** Electron's `app.isPackaged`. Default: guessed from the process (see `isPackagedElectron`). */
  isPackaged?: boolean;
  /** Electron's `process.resourcesPath` (packaged apps). Default: `process.resourcesPath`. */
  resourcesPath?: string;
  /** Development: the Python interpreter. Default: env TASK_SIDECAR_PYTHON, else python3 (python on Windows). */
  python?: string;
  /** Development: the source tree holding the `sidecar` package (cwd of `python -m sidecar`). Default: env TASK_SIDECAR_ROOT, else process.cwd(). */
  sourceRoot?: string;
  platform?: NodeJS.Platform;
  env?: NodeJS.ProcessEnv;
}

/** File name of the frozen sidecar inside `<resources>/sidecar/` (the build issue's output). */
export function frozenSidecarName(platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? 'task-sidecar.exe' : 'task-sidecar';
}

/**
 * Best guess of Electron's `app.isPackaged` without importing electron: running inside Electron,
 * and not the `electron` binary launched on a source folder (`process.defaultApp`).
 */
export function isPackagedElectron(): boolean {
  const p = process as NodeJS.Process & { resourcesPath?: string; defaultApp?: boolean };
  if (typeof process.versions['electron'] !== 'string' || typeof p.resourcesPath !== 'string') return false;
  if (p.defaultApp) return false;
  return !/[\\/]electron(\.exe)?$/i.test(process.execPath);
}

/**
 * Which program runs the sidecar:
 * - packaged app: the frozen binary `<resourcesPath>/sidecar/task-sidecar[.exe]`
 *   (shipped with electron-builder `extraResources`, outside app.asar);
 * - development: `python -m sidecar` in the source tree.
 * The client appends `--db` and `--handlers` itself.
 */
export function resolveSidecarCommand(options: ResolveSidecarOptions = {}): SidecarCommand {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const packaged = options.isPackaged ?? isPackagedElectron();
  if (packaged) {
    const resources = options.resourcesPath ?? (process as NodeJS.Process & { resourcesPath?: string }).resourcesPath;
    if (!resources) throw new Error('resolveSidecarCommand: packaged app but no resourcesPath');
    const join = platform === 'win32' ? path.win32.join : path.posix.join;
    return { command: join(resources, 'sidecar', frozenSidecarName(platform)), args: [] };
  }
  // || not ??: an empty TASK_SIDECAR_PYTHON (set but blank in a .env file) means "not set"
  const python = options.python || env['TASK_SIDECAR_PYTHON'] || (platform === 'win32' ? 'python' : 'python3');
  const cwd = options.sourceRoot ?? env['TASK_SIDECAR_ROOT'] ?? process.cwd();
  return { command: python, args: ['-m', 'sidecar'], cwd };
}
