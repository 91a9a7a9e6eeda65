package p
import ("testing";"time";"github.com/wsl-modules/wsl-modules-action/internal/modtree";"github.com/wsl-modules/wsl-modules-action/internal/depmod")
func TestP(t *testing.T){
 dir:="/tmp/dm/ours/lib/modules/6.1.0-56-amd64"
 for i:=0;i<3;i++{
 s:=time.Now(); tr,_:=modtree.LoadDir(dir,"x"); l:=time.Since(s)
 in,_:=depmod.ReadInputs(dir)
 s=time.Now(); _,err:=depmod.Generate(tr, depmod.GenerateOptions{Inputs:in}); g:=time.Since(s)
 t.Log(l,g,err)}
}
