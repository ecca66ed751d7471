import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createTaskClient } from '@celery-pushserver/client';
import { TaskClientProvider } from '@celery-pushserver/react';
import App from './App.jsx';
import { ApiError } from './api.js';
import { FakeSocket } from './testing/fakeSocket.js';

const ADA = { id: 'u1', username: 'ada' };

function fakeApi(overrides = {}) {
  return {
    currentUser: vi.fn().mockResolvedValue(ADA),
    signIn: vi.fn().mockResolvedValue(ADA),
    register: vi.fn().mockResolvedValue(ADA),
    signOut: vi.fn().mockResolvedValue(undefined),
    startTask: vi.fn(),
    ...overrides,
  };
}

function renderApp(api) {
  const socket = new FakeSocket();
  const client = createTaskClient({ socket });
  const view = render(<TaskClientProvider client={client}><App api={api} /></TaskClientProvider>);
  return { ...view, socket, client };
}

function fillSignIn(username, password) {
  fireEvent.change(screen.getByLabelText('Username'), { target: { value: username } });
  fireEvent.change(screen.getByLabelText('Password'), { target: { value: password } });
}

beforeEach(() => sessionStorage.clear());
afterEach(cleanup);

describe('App', () => {
  it('asks for a sign-in without a session, then shows the console', async () => {
    const api = fakeApi({ currentUser: vi.fn().mockResolvedValue(null) });
    renderApp(api);
    expect(await screen.findByTestId('sign-in')).toBeTruthy();
    fillSignIn('ada', 'correct horse');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Sign in' })));
    expect(api.signIn).toHaveBeenCalledWith('ada', 'correct horse');
    expect(screen.getByTestId('signed-in-as').textContent).toBe('ada');
    expect(screen.getByText('No tasks yet')).toBeTruthy();
  });

  it('creates an account with the second button, and says when the name is taken', async () => {
    const api = fakeApi({
      currentUser: vi.fn().mockResolvedValue(null),
      register: vi.fn().mockRejectedValueOnce(new ApiError(409, 'conflict', 'username taken')).mockResolvedValueOnce(ADA),
    });
    renderApp(api);
    await screen.findByTestId('sign-in');
    fillSignIn('ada', 'correct horse');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Create account' })));
    expect(screen.getByRole('alert').textContent).toMatch(/username is taken/);
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Create account' })));
    expect(api.register).toHaveBeenCalledTimes(2);
    expect(api.signIn).not.toHaveBeenCalled();
    expect(screen.getByTestId('signed-in-as').textContent).toBe('ada');
  });

  it('checks the credentials before sending them', async () => {
    const api = fakeApi({ currentUser: vi.fn().mockResolvedValue(null) });
    renderApp(api);
    await screen.findByTestId('sign-in');
    fillSignIn('ada', 'short');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Sign in' })));
    expect(screen.getByRole('alert').textContent).toMatch(/at least 8 characters/);
    expect(api.signIn).not.toHaveBeenCalled();
  });

  it('starts a task from a form, lists it newest first, and subscribes with its token', async () => {
    const api = fakeApi({
      startTask: vi.fn()
        .mockResolvedValueOnce({ task_id: 'aaaaaaaa-1', token: 'tok-1' })
        .mockResolvedValueOnce({ task_id: 'bbbbbbbb-2', token: 'tok-2' }),
    });
    const { socket } = renderApp(api);
    act(() => socket.serverConnect());
    await screen.findByText('No tasks yet');

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(api.startTask).toHaveBeenCalledWith('resize-image', { width: 640, watermark: 'celery-pushserver', steps_delay: 0.5 });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Classify' })));
    expect(api.startTask).toHaveBeenLastCalledWith('predict', { features: [5.1, 3.5, 1.4, 0.2] });

    const cards = await screen.findAllByTestId('task-card');
    expect(cards.map((c) => c.dataset.kind)).toEqual(['predict', 'resize-image']);
    expect(cards[1].dataset.state).toBe('PENDING');
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([
      { task_id: 'aaaaaaaa-1', token: 'tok-1' }, { task_id: 'bbbbbbbb-2', token: 'tok-2' },
    ]);
    expect(JSON.parse(sessionStorage.getItem('celery-pushserver.tasks.u1')).map((t) => t.id)).toEqual(['bbbbbbbb-2', 'aaaaaaaa-1']);

    fireEvent.click(screen.getByRole('button', { name: 'Remove Iris classification from the list' }));
    expect(screen.getAllByTestId('task-card')).toHaveLength(1);
  });

  it('shows why a task could not be started', async () => {
    const api = fakeApi({ startTask: vi.fn().mockRejectedValue(new ApiError(503, 'broker_unavailable', 'The task queue is unavailable right now. Try again in a few seconds.')) });
    renderApp(api);
    await screen.findByText('No tasks yet');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Run failing task' })));
    await waitFor(() => expect(screen.getByRole('alert').textContent).toMatch(/task queue is unavailable/));
    expect(screen.queryAllByTestId('task-card')).toHaveLength(0);
  });

  it('goes back to the sign-in form when the session has ended', async () => {
    const api = fakeApi({ startTask: vi.fn().mockRejectedValue(new ApiError(401, 'unauthorized', 'sign in first')) });
    renderApp(api);
    await screen.findByText('No tasks yet');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Classify' })));
    expect(await screen.findByTestId('sign-in')).toBeTruthy();
    expect(screen.getByText('Your session has ended: sign in again.')).toBeTruthy();
  });

  it('checks task inputs before sending', async () => {
    const api = fakeApi();
    renderApp(api);
    const width = await screen.findByLabelText('Width (px)');
    fireEvent.change(width, { target: { value: '0' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(screen.getByRole('alert').textContent).toMatch(/Width must be a whole number/);
    expect(api.startTask).not.toHaveBeenCalled();
  });
});
