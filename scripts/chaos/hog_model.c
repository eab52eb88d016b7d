/* A model of chaos scenario 3 without whisperd: 4 paced clients (25 turns/s each), each a chain
 * of 3 relay processes doing PER_HOP_US of busy work per hop (the chat path: client, worker,
 * store, LLM). Prints p50/p99 of the round trip in microseconds. scripts/chaos/hog-model.sh runs
 * it beside a CPU hog in the ways docs/reliability.md reports.
 * Usage: hog_model SECONDS PER_HOP_US */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static void work(int us){double end=now()+us/1e6; while(now()<end);}
int main(int argc,char**argv){
  double seconds=atof(argv[1]); int hops=3, clients=4, rate=25, per_hop=atoi(argv[2]);
  int out[2]; pipe(out);
  for(int c=0;c<clients;c++) if(fork()==0){
    int prev[2]; socketpair(AF_UNIX,SOCK_STREAM,0,prev); int first=prev[0], in=prev[1];
    for(int h=0;h<hops;h++){ int next[2]; socketpair(AF_UNIX,SOCK_STREAM,0,next);
      if(fork()==0){ char b[8]; close(first); close(next[0]); for(;;){ if(read(in,b,8)<=0)_exit(0); work(per_hop);
        if(h<hops-1){ write(next[1],b,1); if(read(next[1],b,8)<=0)_exit(0);} write(in,b,1);} }
      close(in); close(next[1]); in=next[0]; }
    close(in);
    int n=(int)(seconds*rate); double nextt=now()+c*0.01; char b[8];
    for(int i=0;i<n;i++){ nextt+=1.0/rate; double d=nextt-now(); if(d>0)usleep((useconds_t)(d*1e6));
      double t=now(); write(first,"x",1); read(first,b,8); double v=(now()-t)*1e6; write(out[1],&v,sizeof v);} 
    close(first); while(wait(NULL)>0); _exit(0); }
  close(out[1]); int cap=100000,n=0; double*v=malloc(sizeof(double)*cap); double x;
  while(read(out[0],&x,sizeof x)==sizeof x) v[n++]=x; while(wait(NULL)>0);
  qsort(v,n,sizeof(double),cmp); printf("n %d p50 %.0f us p99 %.0f us\n",n,v[n/2],v[n*99/100]); return 0; }
