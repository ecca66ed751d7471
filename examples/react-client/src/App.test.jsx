import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import App from './App.jsx';
import { DispatchError } from './api.js';

beforeEach(() => sessionStorage.clear());
afterEach(cleanup);

describe('App', () => {
  it('starts a task from a form and lists it, newest first', async () => {
    const start = vi.fn()
      .mockResolvedValueOnce({ task_id: 'aaaaaaaa-1', token: 'tok-1' })
      .mockResolvedValueOnce({ task_id: 'bbbbbbbb-2', token: 'tok-2' });
    render(<App start={start} />);
    expect(screen.getByText('No tasks yet')).toBeTruthy();

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(start).toHaveBeenCalledWith('resize-image', { width: 640, watermark: 'celery-pushserver', steps_delay: 0.5 });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Classify' })));
    expect(start).toHaveBeenLastCalledWith('predict', { features: [5.1, 3.5, 1.4, 0.2] });

    const cards = await screen.findAllByTestId('task-card');
    expect(cards.map((c) => c.dataset.kind)).toEqual(['predict', 'resize-image']);
    expect(cards[1].dataset.state).toBe('PENDING');
    expect(JSON.parse(sessionStorage.getItem('celery-pushserver.tasks')).map((t) => t.id)).toEqual(['bbbbbbbb-2', 'aaaaaaaa-1']);

    fireEvent.click(screen.getByRole('button', { name: 'Remove Iris classification from the list' }));
    expect(screen.getAllByTestId('task-card')).toHaveLength(1);
  });

  it('shows why a task could not be started', async () => {
    const start = vi.fn().mockRejectedValue(new DispatchError(503, 'broker_unavailable', 'The task queue is unavailable right now. Try again in a few seconds.'));
    render(<App start={start} />);
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Run failing task' })));
    await waitFor(() => expect(screen.getByRole('alert').textContent).toMatch(/task queue is unavailable/));
    expect(screen.queryAllByTestId('task-card')).toHaveLength(0);
  });

  it('checks inputs before sending', async () => {
    const start = vi.fn();
    render(<App start={start} />);
    const width = screen.getByLabelText('Width (px)');
    fireEvent.change(width, { target: { value: '0' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(screen.getByRole('alert').textContent).toMatch(/Width must be a whole number/);
    expect(start).not.toHaveBeenCalled();
  });
});
