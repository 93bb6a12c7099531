// The console's build: `npm ci && npm run build` writes dist/ (index.html, assets/app.js,
// assets/app.css), which src/admin/assets.rs embeds with include_str!. Fixed file names: the
// binary serves them with `Cache-Control: no-cache` and an ETag instead of hashed names.
import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

export default defineConfig({
  base: '/admin/',
  plugins: [preact()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/app-[name].js',
        assetFileNames: (info) => (info.names?.[0] || info.name || '').endsWith('.css') ? 'assets/app.css' : 'assets/[name][extname]',
        inlineDynamicImports: true,
      },
    },
  },
});
