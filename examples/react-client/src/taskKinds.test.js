import { describe, expect, it } from 'vitest';
import { describeError, describeResult } from './taskKinds.js';

const json = (result) => ({ state: 'SUCCESS', result, result_format: 'json' });

describe('describeResult', () => {
  it('summarises each kind of JSON result', () => {
    expect(describeResult('resize-image', json({ path: '/m/abc.jpg', width: 640, height: 400, bytes: 53350 })))
      .toEqual({ headline: 'Image resized to 640 × 400 px', details: [['File', 'abc.jpg'], ['Size', '52.1 KB']] });
    expect(describeResult('predict', json({ label: 'setosa', probabilities: { setosa: 0.9, virginica: 0.1 } })).headline)
      .toBe('Iris setosa (90.0% confidence)');
    expect(describeResult('webhooks', json({ group_id: 'g', task_ids: ['a', 'b'] })).headline).toBe('Dispatched 2 webhook deliveries');
    expect(describeResult('demo-progress', json(3)).headline).toBe('Completed 3 steps');
    expect(describeResult('demo-progress', json(1)).headline).toBe('Completed 1 step');
  });

  it('shows unknown shapes and JSON strings as they are', () => {
    expect(describeResult('predict', json([1, 2]))).toEqual({ raw: '[\n  1,\n  2\n]' });
    expect(describeResult('predict', json('plain text'))).toEqual({ raw: 'plain text' });
    expect(describeResult('predict', json(null))).toBeNull();
  });

  it('shows a repr as the string it is, never parsed', () => {
    expect(describeResult('demo-progress', { result: '3', result_format: 'repr' })).toEqual({ raw: '3' });
    expect(describeResult('predict', { result: "{'label': 'setosa'}", result_format: 'repr' }))
      .toEqual({ raw: "{'label': 'setosa'}" });
  });

  it('says when the result was too large to send', () => {
    expect(describeResult('predict', { result: null, result_format: 'too_large' }).headline).toMatch(/too large/);
  });

  it('has nothing to show without a result', () => {
    expect(describeResult('predict', { result: null, result_format: null })).toBeNull();
    expect(describeResult('predict', undefined)).toBeNull();
  });
});

describe('describeError', () => {
  it('takes the class from exception_type and the message from exception', () => {
    expect(describeError({ exception: "RuntimeError('Disk quota exceeded')", exception_type: 'RuntimeError' }))
      .toEqual({ type: 'RuntimeError', message: 'Disk quota exceeded' });
    expect(describeError({ exception: "ValueError('a', 2)", exception_type: 'ValueError' }))
      .toEqual({ type: 'ValueError', message: "'a', 2" });
    expect(describeError({ exception: 'something odd', exception_type: null })).toEqual({ type: null, message: 'something odd' });
    expect(describeError({ exception: null, exception_type: null })).toBeNull();
  });
});
