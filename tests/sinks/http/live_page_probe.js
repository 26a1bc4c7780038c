// Run in the live page by test_live_page.py: waits until the image shows a frame and the
// events list has items, then measures the image's pixels.
(async () => {
  const until = Date.now() + 30000;
  let img, items;
  while (Date.now() < until) {
    img = document.querySelector('#cameras img');
    items = document.querySelectorAll('#events li');
    if (img && img.naturalWidth > 0 && items.length >= 3) break;
    await new Promise(r => setTimeout(r, 200));
  }
  if (!img || img.naturalWidth === 0) return {error: 'no decoded MJPEG frame', items: items ? items.length : 0};
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < px.length; i += 16) { const v = (px[i] + px[i+1] + px[i+2]) / 3; sum += v; sq += v * v; n++; }
  const mean = sum / n;
  return {width: img.naturalWidth, height: img.naturalHeight, mean, std: Math.sqrt(sq / n - mean * mean),
          items: items.length, snapshots: document.querySelectorAll('#events img').length,
          first: items.length ? items[0].textContent : '', state: document.getElementById('h-state').textContent,
          fps: document.getElementById('h-fps').textContent};
})()
