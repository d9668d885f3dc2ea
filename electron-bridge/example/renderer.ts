/**
 * Example Activity Center page: start a batch, watch its progress bars, cancel / retry.
 * Uses only `window.tasks` (exposed by the preload) and the renderer entry (no Node, no Electron).
 */
import { TaskStore, SidecarError, type Task, type TaskApi } from '@task-sidecar/electron-bridge/renderer';

declare global {
  interface Window {
    tasks: TaskApi;
  }
}

const store = new TaskStore(window.tasks, { onError: (e) => showError(e) });

function showError(error: unknown): void {
  const box = document.getElementById('error')!;
  box.textContent = error instanceof SidecarError ? `${error.message} (code ${error.code})` : String(error);
}

/** A batch: one parent ("import playlist") with one child per entry, created in one call. */
async function startBatch(entries: number): Promise<void> {
  try {
    const items = [
      { ref: 'batch', type: 'demo.noop', details: { title: `Playlist with ${entries} videos` } },
      ...Array.from({ length: entries }, (_, i) => ({
        type: 'demo.sleep',
        parentId: 'batch',
        details: { seconds: 2 + (i % 3), steps: 20 },
      })),
    ];
    await window.tasks.createMany({ tasks: items });
  } catch (error) {
    showError(error);
  }
}

function row(task: Task, depth: number): HTMLElement {
  const el = document.createElement('div');
  el.className = `task ${task.status.toLowerCase()}`;
  el.style.marginLeft = `${depth * 24}px`;
  const label = document.createElement('span');
  label.textContent = `${task.type} · ${task.status} · ${task.message ?? ''}`;
  const bar = document.createElement('progress');
  bar.max = 100;
  bar.value = task.progress;
  el.append(label, bar);
  if (task.status === 'QUEUED' || task.status === 'RUNNING' || task.status === 'WAITING' || task.status === 'PAUSED') {
    el.append(button('Cancel', () => window.tasks.cancel({ id: task.id })));
  }
  if (task.status === 'FAILED' || task.status === 'CANCELLED') {
    el.append(button('Retry', () => window.tasks.retry({ id: task.id })));
  }
  return el;
}

function button(text: string, action: () => Promise<unknown>): HTMLButtonElement {
  const b = document.createElement('button');
  b.textContent = text;
  b.onclick = () => void action().catch(showError);
  return b;
}

function render(): void {
  const list = document.getElementById('tasks')!;
  const roots = store.all().filter((t) => t.parentId === null);
  list.replaceChildren(
    ...roots.flatMap((root) => [row(root, 0), ...store.children(root.id).map((child) => row(child, 1))]),
  );
}

store.subscribe(render);
document.getElementById('start')!.addEventListener('click', () => void startBatch(5));
void store.start().then(render, showError);
