{
  "targets": [
    { "target_name": "reaper", "sources": ["native/reaper.c"] }
  ]
}
